import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, QwexError } from '../errors.js';
import { installPath } from '../install-paths.js';
import { RunFiles } from '../paths.js';

/**
 * Starts a run's monitor (daemon/monitor.js) as a detached process in its
 * own session, so it survives the CLI that launched it, a closed terminal
 * and Ctrl-C. The monitor claims the run itself (or leaves, when another
 * supervisor has it) and supervises it to its final record. Its own
 * diagnostics go to monitor.log in the run directory. Fire and forget.
 */
export function launchMonitor(runDir: string): void {
  const script = monitorScript();
  const logFd = openSync(join(runDir, RunFiles.monitorLog), 'a', 0o600);
  try {
    const child = spawn(process.execPath, [script, runDir], {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: process.env,
    });
    child.on('error', () => {
      // A monitor that never starts leaves the run unclaimed: the next look hands it over again (reconcile).
    });
    child.unref();
  } finally {
    closeSync(logFd);
  }
}

function monitorScript(): string {
  if (process.env.QWEX_MONITOR_SCRIPT) return process.env.QWEX_MONITOR_SCRIPT;
  const path = installPath('dist', 'daemon', 'monitor.js');
  if (existsSync(path)) return path;
  throw new QwexError(ErrorCode.Internal, 'the run monitor (daemon/monitor.js) is missing from this installation', {
    hint: 'run `npm run build`, or reinstall qwex',
  });
}
