import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, QwexError, isErrorCode } from '../../src/errors.js';
import { installPath } from '../../src/install-paths.js';
import type { Context } from '../context.js';

/** What the UI server process tells this one (server/ui.ts's UiMessage). */
type UiMessage = { type: 'ready'; url: string } | { type: 'error'; error: { code: string; message: string; hint?: string } };

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * `qwex ui`: serves the dashboard over this user's runs on 127.0.0.1. The
 * server is its own process (dist/server/ui.js: client/ never loads the
 * server's code); its stdout is this command's, so the URL it prints is the
 * first line here. Signals are passed on; this command ends when it does,
 * with its status. With --open (the default), a browser is pointed at the
 * URL through a file readable only by this user, so that the token never
 * appears on a command line other users could read.
 */
export default async function ui(_ctx: Context, options: { port: string; open: boolean }): Promise<number> {
  if (!/^[0-9]+$/.test(options.port) || Number(options.port) > 65535) {
    throw new QwexError(ErrorCode.Usage, `--port ${options.port}: expected a port number from 0 to 65535`, { hint: '0 picks any free port' });
  }
  const entry = installPath('dist', 'server', 'ui.js');
  if (!existsSync(entry)) throw new QwexError(ErrorCode.Internal, `the dashboard's server is missing (${entry})`, { hint: 'run `npm run build` in the qwex installation' });

  const child = spawn(process.execPath, [entry, '--port', options.port], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const forward = (signal: NodeJS.Signals): void => {
    child.kill(signal);
  };
  for (const signal of FORWARDED) process.on(signal, forward);
  let failure: QwexError | undefined;
  let opened: string | undefined;
  child.on('message', (message: UiMessage) => {
    if (message.type === 'error') {
      const { code, message: text, hint } = message.error;
      failure = new QwexError(isErrorCode(code) ? code : ErrorCode.Internal, text, hint === undefined ? {} : { hint });
    } else if (message.type === 'ready' && options.open) {
      opened = openBrowser(message.url);
    }
  });
  try {
    const status = await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code, signal) => resolve(code ?? (signal === 'SIGINT' || signal === 'SIGTERM' ? 0 : 1)));
    });
    if (failure) throw failure;
    return status;
  } finally {
    for (const signal of FORWARDED) process.off(signal, forward);
    if (opened) rmSync(opened, { recursive: true, force: true });
  }
}

/**
 * Opens the URL in the desktop's browser by way of a page that redirects to
 * it, in a directory only this user can read (as Jupyter does). Returns that
 * directory, to remove once the server stops. A machine without a desktop
 * opener is no error: the URL was printed.
 */
function openBrowser(url: string): string | undefined {
  const opener = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? undefined : 'xdg-open';
  if (!opener) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'qwex-ui-'));
  const page = join(dir, 'open.html');
  const escaped = url.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  writeFileSync(page, `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=${escaped}"><title>qwex</title><p><a href="${escaped}">Open the qwex dashboard</a></p>\n`, { mode: 0o600 });
  const child = spawn(opener, [page], { stdio: 'ignore', detached: true });
  child.on('error', () => {
    // No opener on this machine (a server without a desktop): the printed URL is there to copy.
  });
  child.unref();
  return dir;
}
