import type { Job, RunError } from '../run.js';

/** Where a run's output goes and what environment it gets. */
export interface RunIO {
  stdoutPath: string;
  stderrPath: string;
  /** The complete environment of the command (inherited, config, job, QWEX_*). */
  env: Record<string, string>;
}

/** How a command ended. Exactly one of exitCode / signal is set, or error when it never ran. */
export interface ExitInfo {
  exitCode: number | null;
  signal: string | null;
  /** Set when the command could not be started (not found, not executable); exitCode follows the shell's 127/126. */
  error?: RunError;
}

/** A started command. The backend owns it until `exited` settles. */
export interface StartedProcess {
  /** False when the command could not be started at all; `exited` has already settled then. */
  spawned: boolean;
  /** Facts to record in run.json under `backend` (pids, container id...). Never secrets. */
  details: Record<string, unknown>;
  /** Settles once the command and its output are finished; never rejects. */
  exited: Promise<ExitInfo>;
  /** Signals everything the run started (its process group, its container). Safe after exit. */
  signal(signal: NodeJS.Signals): void;
}

/**
 * One interface for every place a run can execute. `start` resolves once the
 * command really runs, or with an already-settled `exited` when it could not
 * start. It throws only when the backend itself cannot work (QwexError with
 * code QWEX_BACKEND_UNAVAILABLE, saying why).
 */
export interface Backend {
  readonly name: string;
  start(job: Job, io: RunIO): Promise<StartedProcess>;
}
