import { existsSync } from 'node:fs';
import type { ArtifactManifest } from '../workspace/artifacts.js';
import type { ArtifactTarget, ExitInfo, StartedProcess } from './types.js';

/**
 * The one follow-until-exit routine of the backends whose command runs
 * elsewhere (a container, another machine, a pod): the output reaches the
 * run's log files only by being copied, so exactly one process must copy
 * it, and that is whoever waits for the end (`exited`), never someone who
 * merely looks (`state`, from a `qwex ps`): two copiers would both append.
 * A look that finds the command ended becomes a wait for its end (the rest
 * of the output is copied first). Following survives drops (`retry`), stops
 * at `dispose`, and ends the run as lost, saying why, when it cannot go on
 * at all: its run directory was removed under it (checked every few
 * seconds, so that a supervisor whose run directory is gone stops).
 */

/** Raised inside a follow when its follower was disposed: the follow just stops. */
export class FollowStoppedError extends Error {
  constructor() {
    super('stopped following');
    this.name = 'FollowStoppedError';
  }
}

/** What a follow may use: its stop signal, and waits that end when it stops. */
export interface FollowContext {
  /** Aborted when the follower is disposed or released. */
  readonly signal: AbortSignal;
  /** Waits `ms`; throws FollowStoppedError when the follow stops meanwhile. */
  sleep(ms: number): Promise<void>;
  /** Calls `attempt` until it resolves, waiting `ms` after each failure (a dropped connection, an engine restarting). */
  retry<T>(attempt: () => Promise<T>, ms: number): Promise<T>;
}

/** What a backend supplies for one command that it follows. */
export interface FollowedCommand {
  details: Record<string, unknown>;
  /** The run directory: its disappearance ends a follow that cannot write there. */
  runDir: string;
  /**
   * Copies the command's output into the run's files and resolves with how
   * it ended, once every byte before the end was copied. Called at most
   * once, and only for whoever waits for the end. Throws only when it
   * cannot go on (FollowStoppedError once stopped).
   */
  followToEnd(ctx: FollowContext): Promise<ExitInfo>;
  /** A mere look, copying nothing: true when the command has ended, false while it runs, undefined when nobody can tell now. */
  hasEnded(): Promise<boolean | undefined>;
  signal(signal: NodeJS.Signals): void;
  /** Removes what served the run, once its outcome is recorded. Never rejects. */
  release(): Promise<void>;
  /** Lets go of connections and streams (after dispose, release, or the run directory's removal); the command is not touched. Called once. */
  close(): void;
  running?: Promise<void>;
  collectArtifacts?(target: ArtifactTarget): Promise<ArtifactManifest>;
  onDetails?(listener: (patch: Record<string, unknown>) => void): () => void;
}

/** How often a follow checks that its run directory is still there. */
const RUN_DIR_CHECK_MS = 2000;

export function followUntilExit(command: FollowedCommand): StartedProcess {
  const stop = new AbortController();
  let result: ExitInfo | undefined;
  let ending: Promise<ExitInfo> | undefined;
  let runDirGone = false;
  const halt = (): void => {
    if (stop.signal.aborted) return;
    stop.abort(new FollowStoppedError());
    command.close();
  };
  const ctx: FollowContext = {
    signal: stop.signal,
    sleep: (ms) => abortableSleep(ms, stop.signal),
    retry: async (attempt, ms) => {
      for (;;) {
        if (stop.signal.aborted) throw new FollowStoppedError();
        try {
          return await attempt();
        } catch (error) {
          if (error instanceof FollowStoppedError) throw error;
          await abortableSleep(ms, stop.signal);
        }
      }
    },
  };

  const toEnd = (): Promise<ExitInfo> => {
    if (ending) return ending;
    // A follow whose run directory is removed stops: there is nowhere to copy to, or to record the end in.
    const dirCheck = setInterval(() => {
      if (existsSync(command.runDir)) return;
      runDirGone = true;
      halt();
    }, RUN_DIR_CHECK_MS);
    dirCheck.unref();
    ending = command.followToEnd(ctx).then(
      (info) => {
        clearInterval(dirCheck);
        return (result = info);
      },
      (error: unknown): Promise<ExitInfo> | ExitInfo => {
        clearInterval(dirCheck);
        if (runDirGone || !existsSync(command.runDir)) {
          halt();
          return (result = { exitCode: null, signal: null, lost: `its run directory ${command.runDir} was removed while qwex followed the command` });
        }
        // Stopped (dispose): the run goes on, and whoever follows it next learns its end.
        if (stop.signal.aborted || error instanceof FollowStoppedError) return new Promise<ExitInfo>(() => {});
        return (result = { exitCode: null, signal: null, lost: `qwex could not follow the command: ${(error as Error)?.message ?? String(error)}` });
      },
    );
    return ending;
  };

  return {
    spawned: true,
    details: command.details,
    ...(command.running ? { running: command.running } : {}),
    get exited() {
      return toEnd();
    },
    signal: (sig) => command.signal(sig),
    state: async () => {
      if (result) return result;
      const ended = await command.hasEnded().catch(() => undefined);
      return ended === true ? toEnd() : undefined;
    },
    ...(command.collectArtifacts ? { collectArtifacts: (target) => command.collectArtifacts!(target) } : {}),
    ...(command.onDetails ? { onDetails: (listener) => command.onDetails!(listener) } : {}),
    release: async () => {
      try {
        await command.release();
      } finally {
        halt();
      }
    },
    dispose: halt,
  };
}

/** Waits `ms`, or throws FollowStoppedError as soon as `signal` aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(new FollowStoppedError());
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new FollowStoppedError());
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
