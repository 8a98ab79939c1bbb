import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { DaemonClient } from './daemon-client.js';
import { installPath } from './install-paths.js';
import { ErrorCode, QwexError } from './errors.js';
import { daemonLogPath, socketPath } from './paths.js';
import { Method } from './protocol.js';

/** How long `qwex daemon start` waits for a new qwexd to answer. */
export const DAEMON_START_TIMEOUT_MS = 10_000;
/** How long `qwex daemon stop` waits for qwexd to exit after daemon.shutdown. */
export const DAEMON_STOP_TIMEOUT_MS = 10_000;

export function qwexdScript(): string {
  const path = installPath('dist', 'daemon', 'qwexd.js');
  if (existsSync(path)) return path;
  throw new QwexError(ErrorCode.Internal, 'qwexd (daemon/qwexd.js) is missing from this installation', { hint: 'run `npm run build`, or reinstall qwex' });
}

/**
 * Starts qwexd in the background (its own session, output to its log
 * file) and resolves once it answers on its socket. When one is already
 * running, resolves with that one.
 */
export async function startDaemon(options: { concurrency?: number } = {}): Promise<{ pid: number; socket: string; alreadyRunning: boolean }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDaemonOnce(options);
    } catch (error) {
      // Killed by a signal while it started (not a start-up error of its own, which would say so again): try again.
      if (!(error instanceof KilledDuringStartError) || attempt >= 3) throw error;
    }
  }
}

class KilledDuringStartError extends QwexError {}

async function startDaemonOnce(options: { concurrency?: number }): Promise<{ pid: number; socket: string; alreadyRunning: boolean }> {
  const socket = socketPath();
  const running = await DaemonClient.connectIfRunning(socket);
  if (running) {
    running.close();
    return { pid: running.daemonPid, socket, alreadyRunning: true };
  }
  const logPath = daemonLogPath();
  mkdirSync(dirname(logPath), { recursive: true, mode: 0o700 });
  const logFd = openSync(logPath, 'a', 0o600);
  const args = [qwexdScript(), '--foreground', ...(options.concurrency ? ['--concurrency', String(options.concurrency)] : [])];
  let exited: { code: number | null; signal?: NodeJS.Signals | null } | undefined;
  try {
    const child = spawn(process.execPath, args, {
      detached: true,
      stdio: ['ignore', 'ignore', logFd],
      env: { ...process.env, QWEX_DAEMON_DETACHED: '1', QWEX_NO_DAEMON: '' },
    });
    child.on('exit', (code, signal) => (exited = { code, signal }));
    child.on('error', () => (exited = { code: null }));
    child.unref();
  } finally {
    closeSync(logFd);
  }
  const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const client = await DaemonClient.connectIfRunning(socket).catch(() => undefined);
    if (client) {
      client.close();
      return { pid: client.daemonPid, socket, alreadyRunning: false };
    }
    if (exited) break;
    await sleep(50);
  }
  const killed = exited !== undefined && exited.code === null && exited.signal !== undefined && exited.signal !== null;
  throw new (killed ? KilledDuringStartError : QwexError)(ErrorCode.DaemonUnavailable, exited ? `qwexd exited during start-up (${exited.code === null ? `killed by ${exited.signal ?? 'a signal'}` : `code ${exited.code}`})` : `qwexd did not answer within ${DAEMON_START_TIMEOUT_MS / 1000} s`, {
    hint: `its log says why: ${logPath}\n${lastLines(logPath, 5)}`,
  });
}

/** Asks qwexd to shut down and waits until its socket is gone. Resolves false when none was running. */
export async function stopDaemon(): Promise<{ wasRunning: boolean; pid?: number }> {
  const socket = socketPath();
  const client = await DaemonClient.connectIfRunning(socket);
  if (!client) return { wasRunning: false };
  const pid = client.daemonPid;
  try {
    await client.request(Method.shutdown, {});
  } finally {
    client.close();
  }
  const deadline = Date.now() + DAEMON_STOP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return { wasRunning: true, pid };
    await sleep(50);
  }
  throw new QwexError(ErrorCode.DaemonUnavailable, `qwexd (pid ${pid}) did not stop within ${DAEMON_STOP_TIMEOUT_MS / 1000} s`, {
    hint: `kill ${pid} (its runs go on and are re-adopted at the next start)`,
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    // ESRCH: gone. EPERM: the pid now belongs to another user's process, so qwexd (this user's) is gone too.
    return false;
  }
}

function lastLines(path: string, count: number): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-count).join('\n');
  } catch {
    // No log yet: the hint says where it will be.
    return '';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
