import type { ArtifactManifest } from '../workspace/artifacts.js';
import type { ArtifactSettings, Job, RunError } from '../run/model.js';

/** Where a run's output goes and what environment it gets. */
export interface RunIO {
  /** The run directory: backends keep their own files there (the local backend's exit file). */
  dir: string;
  runId: string;
  /** The project the run belongs to (labels, listings). */
  project: string;
  /** The tree the command runs in: the project, or the run's own copy of its snapshot. `job.cwd` is inside it. */
  root: string;
  stdoutPath: string;
  stderrPath: string;
  /** The complete environment of the command (inherited, config, job, QWEX_*). */
  env: Record<string, string>;
}

/** How a command ended. Exactly one of exitCode / signal is set, or error when it never ran, or lost. */
export interface ExitInfo {
  exitCode: number | null;
  signal: string | null;
  /** Set when the command could not be started (not found, not executable); exitCode follows the shell's 127/126. */
  error?: RunError;
  /** Set when how it ended can no longer be known (its parent process was killed): the reason. */
  lost?: string;
  /** When it ended, if the backend knows better than "now" (an exit file's time). */
  endedAt?: Date;
}

/** A started (or re-found) command. */
export interface StartedProcess {
  /** False when the command could not be started at all; `exited` has already settled then. */
  spawned: boolean;
  /** Facts to record in run.json under `backend` (pids, container id...), enough for `adopt`. Never secrets. */
  details: Record<string, unknown>;
  /** Settles once the command has ended (or is known to be lost); never rejects. */
  exited: Promise<ExitInfo>;
  /** Signals everything the run started (its process group, its container). Safe after exit. */
  signal(signal: NodeJS.Signals): void;
  /**
   * How it ended if it has ended (after collecting what must be collected
   * first, such as the rest of its output), undefined while it runs. Never rejects.
   */
  state(): Promise<ExitInfo | undefined>;
  /**
   * Present when the run's files are not on this machine: brings the watched
   * directories home into the run directory's files/ and writes artifacts.json.
   */
  collectArtifacts?(target: { runId: string; cwd: string; settings: ArtifactSettings; runDir: string }): Promise<ArtifactManifest>;
  /**
   * Present when the backend learns facts while the command runs (queued in
   * a cluster and why, admitted, evicted): each patch is to be merged into
   * the run's `backend` record by whoever supervises it. Returns the unsubscribe.
   */
  onDetails?(listener: (patch: Record<string, unknown>) => void): () => void;
  /** Called once the outcome is recorded: removes what only served the run (its container). Never rejects. */
  release(): Promise<void>;
  /** Stops watching (a process that exits without waiting for `exited`); the command is not touched. */
  dispose(): void;
}

/**
 * One interface for every place a run can execute. `start` resolves once the
 * command really runs, or with an already-settled `exited` when it could not
 * start. It throws only when the backend itself cannot work (QwexError with
 * code QWEX_BACKEND_UNAVAILABLE, saying why). `adopt` finds a command started
 * by another process from the details it recorded, so that a run outlives
 * whoever started it.
 */
export interface Backend {
  readonly name: string;
  /**
   * True when the command's output reaches the run's log files only while
   * some process supervises it (it is copied from the backend); false when
   * the command writes them itself. A run of such a backend whose supervisor
   * died is re-adopted as soon as it is looked at, not only when it ends.
   */
  readonly outputNeedsSupervisor: boolean;
  /**
   * True when the command runs on another machine from the run's workspace
   * snapshot, which the backend sends itself: no local copy is made and
   * artifacts come from `collectArtifacts`.
   */
  readonly runsRemotely?: boolean;
  start(job: Job, io: RunIO): Promise<StartedProcess>;
  adopt(details: Record<string, unknown>, dir: string): StartedProcess;
}

/** A command that never started: `exited` has settled with why. */
export function notStartedProcess(info: ExitInfo): StartedProcess {
  return {
    spawned: false,
    details: {},
    exited: Promise.resolve(info),
    signal: () => {},
    state: () => Promise.resolve(info),
    release: () => Promise.resolve(),
    dispose: () => {},
  };
}
