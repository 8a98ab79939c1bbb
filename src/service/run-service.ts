import type { ListedRun, RunView } from '../protocol.js';
import type { Job, Provenance, Run } from '../run/model.js';
import type { ListQuery } from '../store/run-index.js';

/** A run as callers name it once its id prefix is resolved (RunStore.resolve): its id and run directory. */
export interface RunRef {
  id: string;
  dir: string;
}

export interface SubmitRequest {
  project: string;
  /** Resolved jobs (config applied, workspace snapshots taken). */
  jobs: Job[];
  provenance?: readonly (Provenance | undefined)[];
  /** The environment the commands start from (default: the submitting process's). */
  env?: Record<string, string>;
}

export interface FollowOptions {
  onStdout: (chunk: Buffer) => void | Promise<void>;
  onStderr: (chunk: Buffer) => void | Promise<void>;
  /** Aborting stops following (detach): the run goes on, and the record as it is then is returned. */
  signal?: AbortSignal;
}

/**
 * What every caller does with runs (the CLI's commands, the SDK, and soon
 * the web dashboard): one interface, two implementations chosen once per
 * process: direct (this process creates runs and hands them to per-run
 * monitors) and through qwexd (which queues and supervises them). Callers
 * never branch on which one they have; behaviour is the same either way.
 */
export interface RunService {
  /** `direct` or `qwexd`, for what people are told ("submitted to qwexd"). */
  readonly via: 'direct' | 'qwexd';
  submit(request: SubmitRequest): Promise<Run[]>;
  /** Asks the run to stop: SIGTERM, then SIGKILL after `graceMs` (the run's own grace period by default). Returns the record as it is then. */
  cancel(run: RunRef, options?: { graceMs?: number }): Promise<Run>;
  /** The record, brought up to date, with the queue position and live usage where there are some. */
  get(run: RunRef): Promise<RunView>;
  list(query: ListQuery): Promise<ListedRun[]>;
  /** Resolves with the final record once the run has ended (the record as it is then if `signal` aborts). */
  wait(run: RunRef, options?: { signal?: AbortSignal }): Promise<Run>;
  /** Replays the run's output, streams it live, and resolves with the final record once both logs are drained. */
  follow(run: RunRef, options: FollowOptions): Promise<Run>;
  close(): Promise<void>;
}
