import { statSync, watch, type FSWatcher } from 'node:fs';
import { constants } from 'node:os';
import { ErrorCode } from '../../errors.js';
import { RunFiles, exitFallbackPath } from '../../paths.js';
import { isGroupOurs, isProcessAlive, signalGroup } from '../../process/info.js';
import type { ExitInfo } from '../types.js';
import { exitFilePath, readExitFile, type ShimExit } from './shim.js';

/** How often a command is checked for a shim that died without a word (and an exit file missed). */
const CHECK_MS = 1000;

/**
 * Waits for the shim's exit file (in the run directory, or at the fallback
 * path). Wakes on fs.watch events, on the shim's exit (when this process or
 * its spawner started it), and every second to notice a shim that was
 * killed: then the run is lost once nothing of its process group is left.
 */
export class ExitWatcher {
  readonly exited: Promise<ExitInfo>;
  private resolve!: (info: ExitInfo) => void;
  private fsWatcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  /** How it ended, once known. */
  result: ExitInfo | undefined;

  constructor(
    private readonly dir: string,
    private readonly runId: string,
    private readonly shim: { pid: number; startTime?: string } | undefined,
    readonly group: { pgid: number; startTime: string | undefined } | undefined,
    private readonly file = 'the command',
  ) {
    this.exited = new Promise((resolve) => (this.resolve = resolve));
    // Even where the shim's end is reported (our child, or our spawner's), the exit file is seen sooner than that.
    this.watchDir(dir);
    // Not unref'd: a process waiting for a run (a monitor) must stay alive until it ends or dispose() is called.
    this.timer = setInterval(() => this.check(), CHECK_MS);
    this.check();
  }

  private watchDir(dir: string): void {
    try {
      this.fsWatcher = watch(dir, { persistent: false }, (_event, name) => {
        if (name === null || name === RunFiles.exit) this.check();
      });
      this.fsWatcher.on('error', () => {
        // The run directory went away: the timer still looks.
      });
    } catch {
      // No watch support here: the timer still notices.
    }
  }

  /**
   * Signals the run's whole tree. Through the shim while it lives (it
   * forwards SIGTERM/SIGINT/SIGHUP to every descendant, setsid'd ones too;
   * SIGUSR1 asks it to SIGKILL them all); else the process group, and only
   * if it is still the run's own (its leader's start time matches the
   * record): a recycled group id is never signalled.
   */
  signal(sig: NodeJS.Signals): void {
    if (this.shim && isProcessAlive(this.shim.pid, this.shim.startTime)) {
      try {
        process.kill(this.shim.pid, sig === 'SIGKILL' ? 'SIGUSR1' : sig);
        return;
      } catch {
        // It exited between the check and the kill: fall through to the group.
      }
    }
    if (this.group && isGroupOurs(this.group.pgid, this.group.startTime)) signalGroup(this.group.pgid, sig);
  }

  check(): void {
    if (this.done) return;
    const info = readExit(this.dir, this.runId, this.file);
    if (info) return this.finish(info);
    if (this.shim && isProcessAlive(this.shim.pid, this.shim.startTime)) return;
    // The shim is gone without an exit file (killed), or there never was one.
    if (this.group && isGroupOurs(this.group.pgid, this.group.startTime)) return; // still running, though nobody can learn how it ends
    const late = readExit(this.dir, this.runId, this.file); // it may have written the file just before exiting
    this.finish(
      late ?? {
        exitCode: null,
        signal: null,
        lost: this.shim ? `its shim (pid ${this.shim.pid}) was killed before the command ended` : 'it was started without a shim, by a process that is gone',
      },
    );
  }

  dispose(): void {
    this.done = true;
    this.fsWatcher?.close();
    if (this.timer) clearInterval(this.timer);
  }

  private finish(info: ExitInfo): void {
    this.dispose();
    this.result = info;
    this.resolve(info);
  }
}

const SIGNAL_NAMES: Record<number, string> = Object.fromEntries(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/** How the command ended, from the exit file in the run directory or at the fallback path; undefined while neither exists. */
export function readExit(dir: string, runId: string, file: string): ExitInfo | undefined {
  for (const path of [exitFilePath(dir), exitFallbackPath(runId)]) {
    let exit: ShimExit | undefined;
    try {
      exit = readExitFile(path);
    } catch (error) {
      return { exitCode: null, signal: null, lost: `its exit status cannot be read: ${(error as Error).message}` };
    }
    if (exit === undefined) continue;
    const endedAt = mtimeOf(path);
    const info: ExitInfo =
      exit.errno !== null
        ? spawnFailure(exit.errno, file)
        : exit.signal !== null
          ? { exitCode: null, signal: SIGNAL_NAMES[exit.signal] ?? `SIG${exit.signal}` }
          : { exitCode: exit.exitCode, signal: null };
    return { ...info, ...(endedAt ? { endedAt } : {}), ...(exit.leftovers > 0 ? { leftovers: exit.leftovers } : {}) };
  }
  return undefined;
}

function mtimeOf(path: string): Date | undefined {
  try {
    return statSync(path).mtime;
  } catch {
    return undefined; // read a moment ago, removed since: "now" is close enough
  }
}

export function spawnFailure(errno: number | undefined, file: string): ExitInfo {
  if (errno === constants.errno.ENOENT) {
    return { exitCode: 127, signal: null, error: { code: ErrorCode.CommandNotFound, message: `command not found: ${file}` } };
  }
  if (errno === constants.errno.EACCES) {
    return { exitCode: 126, signal: null, error: { code: ErrorCode.CommandNotExecutable, message: `permission denied: ${file}` } };
  }
  return { exitCode: 126, signal: null, error: { code: ErrorCode.CommandFailedToStart, message: `cannot execute ${file} (errno ${errno ?? 'unknown'})` } };
}

