import { readFileSync } from 'node:fs';
import { DaemonClient } from '../../src/daemon-client.js';
import { startDaemon, stopDaemon } from '../../src/daemon-process.js';
import { errnoCode } from '../../src/errors.js';
import { daemonLogPath, socketPath } from '../../src/paths.js';
import { Method } from '../../src/protocol.js';
import type { Context } from '../context.js';
import { parseCount } from '../parse.js';
import { formatDuration } from '../render.js';

export async function start(_ctx: Context, options: { concurrency?: string }): Promise<number> {
  const concurrency = options.concurrency === undefined ? undefined : parseCount(options.concurrency, '--concurrency');
  const started = await startDaemon(concurrency === undefined ? {} : { concurrency });
  process.stderr.write(`qwexd ${started.alreadyRunning ? 'was already running' : 'started'} (pid ${started.pid})\n`);
  return 0;
}

export async function stop(): Promise<number> {
  const stopped = await stopDaemon();
  process.stderr.write(stopped.wasRunning ? `qwexd stopped (pid ${stopped.pid}); its runs go on\n` : 'qwexd was not running\n');
  return 0;
}

/** Exits 0 when qwexd runs, 1 when it does not (direct mode), like `systemctl is-active`. */
export async function status(_ctx: Context, options: { json?: boolean }): Promise<number> {
  const client = await DaemonClient.connectIfRunning();
  if (!client) {
    if (options.json) process.stdout.write(`${JSON.stringify({ running: false, socket: socketPath() })}\n`);
    else process.stdout.write(`qwexd is not running (socket ${socketPath()}); qwex works in direct mode\n`);
    return 1;
  }
  try {
    const s = await client.request(Method.status, {});
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ running: true, ...s }, null, 2)}\n`);
    } else {
      process.stdout.write(
        [
          `qwexd ${s.version} running, pid ${s.pid}, up ${formatDuration(s.uptimeMs)}`,
          `socket       ${s.socket}`,
          `runs         ${s.runs.running} running, ${s.runs.queued} queued (concurrency ${s.concurrency})`,
          `clients      ${s.connections} connected, ${s.subscriptions} following logs`,
          `log          ${daemonLogPath()}`,
        ].join('\n') + '\n',
      );
    }
    return 0;
  } finally {
    client.close();
  }
}

export async function logs(_ctx: Context, options: { lines: string }): Promise<number> {
  const count = parseCount(options.lines, '--lines');
  let text: string;
  try {
    text = readFileSync(daemonLogPath(), 'utf8');
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error;
    process.stderr.write(`no qwexd log yet (${daemonLogPath()})\n`);
    return 0;
  }
  const lines = text.trimEnd().split('\n');
  process.stdout.write(`${(count === 0 ? lines : lines.slice(-count)).join('\n')}\n`);
  return 0;
}
