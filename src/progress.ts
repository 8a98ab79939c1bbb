import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeJsonAtomic } from './fs-atomic.js';

/**
 * Progress of long work around a run: taking a workspace snapshot, sending
 * it (SSH, a Kubernetes pod, qwexcloud), pulling an image, collecting
 * artifacts. Whoever does the work reports steps; a sink receives the
 * current state, throttled. The CLI renders it on its terminal (client/
 * progress.ts); a run's supervisor (a monitor, qwexd) writes it to the run
 * directory's progress.json, which `qwex run` and `qwex attach` read while
 * the run is pending or ending. Nothing here prints.
 */
export type ProgressUnit = 'bytes' | 'files' | 'tries';

/** What progress.json holds: the step under way. */
export interface ProgressState {
  /** What is being done, as a person would say it: "sending the workspace to gpu-box". */
  label: string;
  unit: ProgressUnit;
  done: number;
  /** When it is known. */
  total?: number;
  /** Units per second over the last few seconds, once it can be told. */
  rate?: number;
  /** Seconds left at that rate, when the total is known. */
  etaSeconds?: number;
  /** More of what is counted: "1,204 files". */
  detail?: string;
  startedAt: string;
  updatedAt: string;
}

/** One step of work. Calls after `end` are ignored. */
export interface ProgressStep {
  /** How far it is: `done` units in all (not an increment); a total learnt late may come with it. */
  set(done: number, options?: { total?: number; detail?: string }): void;
  add(units: number, options?: { detail?: string }): void;
  /** The step is over (done or failed): its line goes. */
  end(): void;
}

/** Where a backend or the snapshot reports its steps (RunIO.progress). One step is shown at a time: the latest. */
export interface Progress {
  step(label: string, unit: ProgressUnit, total?: number): ProgressStep;
}

/** Reports nowhere: for work whose caller shows no progress. */
export const NO_PROGRESS: Progress = {
  step: () => ({ set: () => {}, add: () => {}, end: () => {} }),
};

/** The samples the rate is taken over. */
const RATE_WINDOW_MS = 3000;

/**
 * A Progress whose sink gets the current state at most every `throttleMs`
 * (and at once when a step starts or ends; undefined when none is under
 * way). The last update of a burst is never lost: it is delivered when the
 * throttle interval is over.
 */
export function createProgress(sink: (state: ProgressState | undefined) => void, options: { throttleMs: number; now?: () => number }): Progress {
  const now = options.now ?? Date.now;
  let current: object | undefined;
  return {
    step(label, unit, total) {
      const token = {};
      current = token;
      const started = now();
      const samples: [time: number, done: number][] = [[started, 0]];
      let state: ProgressState = { label, unit, done: 0, ...(total === undefined ? {} : { total }), startedAt: new Date(started).toISOString(), updatedAt: new Date(started).toISOString() };
      let lastSent = 0;
      let timer: NodeJS.Timeout | undefined;
      let ended = false;
      const deliver = (): void => {
        if (timer) clearTimeout(timer);
        timer = undefined;
        lastSent = now();
        if (current === token) sink(state);
      };
      const changed = (): void => {
        const wait = lastSent + options.throttleMs - now();
        if (wait <= 0) deliver();
        else timer ??= setTimeout(deliver, wait).unref();
      };
      const update = (done: number, extra: { total?: number; detail?: string } = {}): void => {
        if (ended) return;
        const t = now();
        samples.push([t, done]);
        while (samples.length > 2 && t - samples[0]![0] > RATE_WINDOW_MS) samples.shift();
        const [t0, d0] = samples[0]!;
        const rate = t - t0 >= 500 ? ((done - d0) * 1000) / (t - t0) : state.rate;
        const whole = extra.total ?? state.total;
        state = {
          ...state,
          done,
          ...(whole === undefined ? {} : { total: whole }),
          ...(extra.detail === undefined ? {} : { detail: extra.detail }),
          updatedAt: new Date(t).toISOString(),
        };
        delete state.rate;
        delete state.etaSeconds;
        if (rate !== undefined && rate > 0) {
          state.rate = rate;
          if (whole !== undefined) state.etaSeconds = Math.max(0, (whole - done) / rate);
        }
        changed();
      };
      deliver();
      return {
        set: update,
        add: (units, extra) => update(state.done + units, extra),
        end: () => {
          if (ended) return;
          ended = true;
          if (timer) clearTimeout(timer);
          if (current === token) {
            current = undefined;
            sink(undefined);
          }
        },
      };
    },
  };
}

/** The file in a run directory that holds the progress of its supervisor's current step. */
export const PROGRESS_FILE = 'progress.json';

/** How often a supervisor rewrites progress.json at most. */
const FILE_THROTTLE_MS = 250;

/** A run supervisor's Progress: the step under way is written to the run directory's progress.json, removed when it ends. */
export function runProgress(runDir: string): Progress {
  const path = join(runDir, PROGRESS_FILE);
  return createProgress(
    (state) => {
      try {
        if (state === undefined) rmSync(path, { force: true });
        else writeJsonAtomic(path, state, 'none');
      } catch {
        // Progress is a courtesy: a full disk or a removed run directory must not fail the work it describes.
      }
    },
    { throttleMs: FILE_THROTTLE_MS },
  );
}

/** The step a run's supervisor reports now, if any (a file being replaced, or torn, reads as none). */
export function readRunProgress(runDir: string): ProgressState | undefined {
  try {
    const value = JSON.parse(readFileSync(join(runDir, PROGRESS_FILE), 'utf8')) as ProgressState;
    return typeof value.label === 'string' && typeof value.done === 'number' ? value : undefined;
  } catch {
    return undefined;
  }
}
