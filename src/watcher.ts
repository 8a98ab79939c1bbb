import { watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { LogFollower } from './log-follower.js';
import { RunFiles } from './paths.js';
import { isTerminal, type Run } from './run/model.js';
import type { RunStore } from './store/run-store.js';

/**
 * The Watcher observes runs: their records and their logs. It never changes
 * a run; where a look needs bringing a stale record up to date (a dead
 * monitor), the caller passes `refresh`, which is the Runner's reconcile.
 */
export interface WaitOptions {
  /** Reads the current record; defaults to reading run.json. */
  refresh?: (dir: string) => Run | Promise<Run>;
  signal?: AbortSignal;
  /** How often the record is re-read even without a file event. */
  checkMs?: number;
}

export interface FollowOptions extends WaitOptions {
  onStdout: (chunk: Buffer) => void | Promise<void>;
  onStderr: (chunk: Buffer) => void | Promise<void>;
  /** Byte offsets to start from; 0 replays the whole log. */
  stdoutOffset?: number;
  stderrOffset?: number;
  /** Read the logs synchronously, into buffers used again (see LogFollowerOptions.synchronous): the callbacks must not keep a chunk. */
  synchronous?: boolean;
}

export class Watcher {
  constructor(private readonly store: RunStore) {}

  read(dir: string): Run {
    return this.store.read(dir);
  }

  /**
   * Resolves with the record once the run is in a final state. When `signal`
   * aborts first, resolves with the record as it is then.
   */
  waitForEnd(dir: string, options: WaitOptions = {}): Promise<Run> {
    const refresh = options.refresh ?? ((d: string) => this.store.read(d));
    return new Promise<Run>((resolve, reject) => {
      let fsWatcher: FSWatcher | undefined;
      // Assigned once the checks are set up; finish() may run before that (an already aborted signal).
      let timer: NodeJS.Timeout | undefined = undefined;
      let settled = false;
      const finish = (run: Run | undefined, error?: unknown): void => {
        if (settled) return;
        settled = true;
        fsWatcher?.close();
        if (timer) clearInterval(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (run) resolve(run);
        else reject(error);
      };
      let checking = false;
      let again = false;
      const check = async (): Promise<void> => {
        if (settled) return;
        if (checking) {
          again = true;
          return;
        }
        checking = true;
        try {
          do {
            again = false;
            const run = await refresh(dir);
            if (isTerminal(run.status)) finish(run);
          } while (again && !settled);
        } catch (error) {
          finish(undefined, error);
        } finally {
          checking = false;
        }
      };
      const onAbort = (): void => {
        try {
          finish(this.store.read(dir));
        } catch (error) {
          finish(undefined, error);
        }
      };
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort);
      try {
        fsWatcher = watch(dir, { persistent: true }, (_event, name) => {
          if (name === null || name === RunFiles.record || name === RunFiles.exit) void check();
        });
        fsWatcher.on('error', () => {});
      } catch {
        // no watch support: the interval below is enough
      }
      timer = setInterval(() => void check(), options.checkMs ?? 1000);
      void check();
    });
  }

  /**
   * Streams both logs to the callbacks until the run ends, then drains them
   * to their last byte and resolves with the final record. Aborting `signal`
   * stops following (detach) and resolves with the record as it is.
   */
  async follow(dir: string, options: FollowOptions): Promise<Run> {
    const synchronous = options.synchronous === true;
    const out = new LogFollower(join(dir, RunFiles.stdout), { offset: options.stdoutOffset ?? 0, onData: options.onStdout, synchronous });
    const err = new LogFollower(join(dir, RunFiles.stderr), { offset: options.stderrOffset ?? 0, onData: options.onStderr, synchronous });
    out.start();
    err.start();
    try {
      const run = await this.waitForEnd(dir, options);
      if (options.signal?.aborted) {
        await Promise.all([out.dispose(), err.dispose()]);
      } else {
        await Promise.all([out.finish(), err.finish()]);
      }
      return run;
    } finally {
      await Promise.all([out.dispose(), err.dispose()]);
    }
  }
}
