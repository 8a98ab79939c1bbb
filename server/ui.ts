/**
 * `qwex ui`'s server process (bundled to dist/server/ui.js): started by the
 * CLI as a child whose stdout and stderr are the CLI's, with an IPC channel.
 * It prints the URL with its one-time token as the first line on stdout and
 * serves until SIGINT/SIGTERM, or until the `qwex ui` that started it is
 * gone (even killed with -9: the IPC channel closes).
 *
 * A process of its own rather than part of the CLI: client/ may not import
 * server/ (the route handlers live there, shared with qwexcloud), and
 * `qwex`'s other commands never load Fastify this way.
 */
import { parseArgs } from 'node:util';
import { ErrorCode, QwexError, exitStatusFor, toQwexError } from '../src/errors.js';
import { startLocalUi, type LocalUi } from './ui-local.js';

/** What this process tells the `qwex ui` that started it, besides what it prints. */
export type UiMessage = { type: 'ready'; url: string } | { type: 'error'; error: { code: string; message: string; hint?: string } };

function send(message: UiMessage): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  let ui: LocalUi;
  try {
    const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } }, strict: true });
    const port = Number(values.port);
    if (!/^[0-9]+$/.test(values.port) || port > 65535) throw new QwexError(ErrorCode.Usage, `--port ${values.port}: expected a port number from 0 to 65535`, { hint: '0 picks any free port' });
    ui = await startLocalUi({ port, onError: (error) => process.stderr.write(`qwex ui: ${error.message}\n`) });
  } catch (error) {
    const qe = toQwexError(error);
    // Started by `qwex ui`, which reports it as every qwex error is reported; started by hand, here.
    if (process.send) send({ type: 'error', error: { code: qe.code, message: qe.message, ...(qe.hint ? { hint: qe.hint } : {}) } });
    else process.stderr.write(`qwex ui: ${qe.message}${qe.hint ? `\nhint: ${qe.hint}` : ''}\n`);
    process.exitCode = exitStatusFor(qe.code);
    process.disconnect?.();
    return;
  }
  process.stdout.write(`${ui.url}\n`);
  send({ type: 'ready', url: ui.url });
  let stopping: Promise<void> | undefined;
  const stop = (): void => {
    stopping ??= ui.close().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`qwex ui: ${(error as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, stop);
  process.on('disconnect', stop);
}

await main();
