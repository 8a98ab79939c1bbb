import { ErrorCode, QwexError, toQwexError } from '../src/errors.js';
import { paint, styleFor } from './style.js';

/**
 * The one place qwex exits, and the one table from error codes to exit
 * codes. Commands that wait for a run (run, wait, logs -f, attach) exit with
 * the run's own code instead; see "Exit codes" in the README.
 */
export const EXIT_CODES: Record<ErrorCode, number> = {
  QWEX_USAGE: 2,
  QWEX_RUN_NOT_FOUND: 3,
  QWEX_RUN_AMBIGUOUS: 4,
  QWEX_CONFIG_INVALID: 5,
  QWEX_STATE_UNWRITABLE: 6,
  QWEX_RECORD_INVALID: 7,
  QWEX_INDEX_ERROR: 8,
  QWEX_BACKEND_UNAVAILABLE: 9,
  QWEX_RUN_NOT_ACTIVE: 10,
  QWEX_INVALID_TRANSITION: 11,
  QWEX_DAEMON_UNAVAILABLE: 12,
  QWEX_PROTOCOL_MISMATCH: 13,
  QWEX_DAEMON_ALREADY_RUNNING: 14,
  QWEX_SOCKET_PATH_TOO_LONG: 15,
  QWEX_SERVICE_MANAGER: 16,
  QWEX_IMAGE_NOT_FOUND: 17,
  QWEX_IMAGE_PULL_FAILED: 18,
  QWEX_CONTAINER_FAILED: 19,
  QWEX_UNAUTHORIZED: 20,
  QWEX_FORBIDDEN: 21,
  QWEX_TOO_LARGE: 22,
  QWEX_RATE_LIMITED: 23,
  QWEX_NOT_FOUND: 24,
  QWEX_BLOB_MISSING: 25,
  QWEX_SERVER_UNAVAILABLE: 26,
  QWEX_INTERNAL: 70,
};

export function exitCodeFor(error: QwexError): number {
  return EXIT_CODES[error.code] ?? 70;
}

/** Renders an error on stderr (as JSON when the command was asked for --json). Returns its exit code. */
export function reportError(error: unknown, options: { json: boolean }): number {
  const isCommanderError = error instanceof Error && typeof (error as { code?: unknown }).code === 'string' && (error as unknown as { code: string }).code.startsWith('commander.');
  const qe = isCommanderError ? new QwexError(ErrorCode.Usage, (error as Error).message.replace(/^error: /, '')) : toQwexError(error);
  if (options.json) {
    process.stderr.write(`${JSON.stringify({ error: qe.toJSON() })}\n`);
  } else {
    const style = styleFor(process.stderr);
    process.stderr.write(`${paint(style, 'red', 'qwex:')} ${qe.message}\n`);
    if (qe.hint) process.stderr.write(`${paint(style, 'gray', `hint: ${qe.hint}`)}\n`);
    if (qe.code === ErrorCode.Internal && process.env.QWEX_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  }
  return exitCodeFor(qe);
}

/** Exits once stdout and stderr have flushed what was written to them (pipes are asynchronous). */
export async function exit(code: number): Promise<never> {
  process.exitCode = code;
  await Promise.all([flush(process.stdout), flush(process.stderr)]);
  process.exit(code);
}

function flush(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) return resolve();
    stream.write('', () => resolve());
  });
}
