import { existsSync, mkdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { DaemonClient } from '../../src/daemon-client.js';
import { qwexdScript, startDaemon, stopDaemon } from '../../src/daemon-process.js';
import { ErrorCode, QwexError, errnoCode } from '../../src/errors.js';
import { writeFileAtomic } from '../../src/fs-atomic.js';
import { daemonLogPath, socketPath, stateDir } from '../../src/paths.js';
import {
  LAUNCHD_LABEL,
  SYSTEMD_UNIT_NAME,
  launchdPlistPath,
  renderLaunchdPlist,
  renderSystemdUnit,
  serviceEnv,
  systemdUnitPath,
} from '../../src/service-files.js';
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

interface InstallOptions {
  enable: boolean;
  platform?: string;
  json?: boolean;
}

type ServicePlatform = 'linux' | 'darwin';

function servicePlatform(requested: string | undefined): ServicePlatform {
  const platform = requested ?? process.platform;
  if (platform === 'linux' || platform === 'darwin') return platform;
  throw new QwexError(ErrorCode.Usage, `no user-service support for platform "${platform}"`, {
    hint: 'on this platform, start qwexd from your login scripts with `qwex daemon start`',
  });
}

/** Writes the systemd user unit or launchd agent for this installation and (unless --no-enable) enables it. */
export async function install(_ctx: Context, options: InstallOptions): Promise<number> {
  const platform = servicePlatform(options.platform);
  const spec = {
    node: process.execPath,
    qwexd: realpathSync(qwexdScript()),
    env: serviceEnv(),
    stderrPath: join(stateDir(), 'qwexd.stderr.log'),
  };
  const path = platform === 'linux' ? systemdUnitPath() : launchdPlistPath();
  mkdirSync(dirname(path), { recursive: true });
  writeFileAtomic(path, platform === 'linux' ? renderSystemdUnit(spec) : renderLaunchdPlist(spec), 0o644);
  const commands: string[][] = [];
  if (options.enable) {
    // A qwexd started by hand would hold the lock and make the service's own start fail.
    await stopDaemon();
    if (platform === 'linux') {
      commands.push(['systemctl', '--user', 'daemon-reload'], ['systemctl', '--user', 'enable', '--now', SYSTEMD_UNIT_NAME]);
    } else {
      commands.push(['launchctl', 'bootstrap', `gui/${process.getuid?.() ?? 0}`, path]);
    }
    for (const command of commands) await serviceManager(command, path);
  }
  report(options.json, { installed: true, platform, path, enabled: options.enable }, `wrote ${path}${options.enable ? ' and enabled it: qwexd now starts at login' : ''}`);
  return 0;
}

export async function uninstall(_ctx: Context, options: InstallOptions): Promise<number> {
  const platform = servicePlatform(options.platform);
  const path = platform === 'linux' ? systemdUnitPath() : launchdPlistPath();
  if (options.enable) {
    const command = platform === 'linux'
      ? ['systemctl', '--user', 'disable', '--now', SYSTEMD_UNIT_NAME]
      : ['launchctl', 'bootout', `gui/${process.getuid?.() ?? 0}/${LAUNCHD_LABEL}`];
    // Not loaded is fine: the point is that it is gone.
    await execa(command[0]!, command.slice(1), { reject: false });
  }
  const existed = existsSync(path);
  rmSync(path, { force: true });
  if (options.enable && platform === 'linux') await execa('systemctl', ['--user', 'daemon-reload'], { reject: false });
  report(options.json, { installed: false, platform, path, removed: existed }, existed ? `removed ${path}` : `nothing to remove at ${path}`);
  return 0;
}

async function serviceManager(command: string[], path: string): Promise<void> {
  const result = await execa(command[0]!, command.slice(1), { reject: false });
  if (result.exitCode === 0) return;
  const why = String(result.stderr || result.stdout || result.shortMessage).trim();
  throw new QwexError(ErrorCode.ServiceManager, `\`${command.join(' ')}\` failed: ${why}`, {
    hint: `the service file is written (${path}); fix the service manager's complaint and run that command again, or use --no-enable`,
  });
}

function report(json: boolean | undefined, value: Record<string, unknown>, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text}\n`);
}
