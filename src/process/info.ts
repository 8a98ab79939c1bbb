import { readFileSync } from 'node:fs';
import type * as ChildProcessModule from 'node:child_process';
import { createRequire } from 'node:module';
import { errnoCode } from '../errors.js';

/**
 * A token for when a process started, so that a pid recorded earlier can be
 * told apart from a new process that reused it. Linux: field 22 of
 * /proc/PID/stat (clock ticks since boot). Elsewhere: `ps -o lstart=`.
 * Undefined when the process does not exist.
 */
export function processStartTime(pid: number): string | undefined {
  if (process.platform === 'linux') {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // A zombie has exited and only waits to be reaped: it is not running.
      if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
      return fields[19];
    } catch (error) {
      // ENOENT/ESRCH: no such process (any more). Anything else is not a question of the process.
      if (isNoProcess(error)) return undefined;
      throw error;
    }
  }
  try {
    const out = childProcess().execFileSync('ps', ['-o', 'lstart=', '-p', String(pid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return out === '' ? undefined : out;
  } catch (error) {
    // ps exits 1 when no process has this pid. A ps that could not run at all must not make every process look gone.
    if ((error as { status?: unknown }).status === 1) return undefined;
    throw error;
  }
}

/** True when a process with this pid exists (and, if given, started at `startTime`). */
export function isProcessAlive(pid: number, startTime?: string): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    // ESRCH: gone. EPERM: it exists but belongs to someone else, so it is not ours either.
    return false;
  }
  const actual = processStartTime(pid);
  if (actual === undefined) return false;
  return startTime === undefined || actual === startTime;
}

/**
 * True when the process group is still the one a run started: its leader
 * (pid = pgid) is the process recorded (same start time), or has exited
 * leaving members behind. A group whose id was recycled by a new leader
 * since is not ours (Linux does not reuse a pid while a group of that id
 * has members, so members without a leader are the run's own).
 */
export function isGroupOurs(pgid: number, leaderStartTime: string | undefined): boolean {
  if (!isGroupAlive(pgid)) return false;
  if (leaderStartTime === undefined) return true;
  const leader = processStartTime(pgid);
  return leader === undefined || leader === leaderStartTime;
}

/** True when any process is left in the process group. */
export function isGroupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (error) {
    // ESRCH: no process left in it; EPERM: the group belongs to someone else, so it is not ours.
    if (isNoProcess(error) || errnoCode(error) === 'EPERM') return false;
    throw error;
  }
}

/** Sends a signal to a process group; false when the group is gone. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (error) {
    if (isNoProcess(error) || errnoCode(error) === 'EPERM') return false;
    throw error;
  }
}

function isNoProcess(error: unknown): boolean {
  const code = errnoCode(error);
  return code === 'ESRCH' || code === 'ENOENT';
}

// Loaded on first use, synchronously: only where /proc is missing (macOS) is `ps` asked. Every `qwex ps` loads this
// module (the local backend's descriptor reads shim files with it), and node:child_process (with node:net) costs a
// command's start about 4 ms.
const load = createRequire(import.meta.url);
export function childProcess(): typeof ChildProcessModule {
  return load('node:child_process') as typeof ChildProcessModule;
}
