import { ErrorCode, QwexError, exitStatusFor, toQwexError } from '../src/errors.js';
import { paint, styleFor } from './style.js';

/**
 * The one place qwex exits. Error codes map to exit statuses in one table
 * (src/errors.ts, shared with qwexd and doctor). Commands that wait for a
 * run (run, wait, logs -f, attach) exit with the run's own code instead;
 * see docs/exit-codes.md.
 */
export function exitCodeFor(error: QwexError): number {
  return exitStatusFor(error.code);
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
