import type { ArtifactManifest } from '../workspace/artifacts.js';
import type { ContainerConfig, ContainerSpec } from '../config/container.js';
import type { Progress } from '../progress.js';
import type { ArtifactSettings, Job, Run, RunError } from '../run/model.js';
import type { z, ZodType } from 'zod';

type Zod = typeof z;

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
  /** Aborted when the run is cancelled while it starts: a pull, a sync or an upload stops at once. */
  signal: AbortSignal;
  /** Where long work of the start (a pull, a sync, an upload) reports how far it is; absent: nobody is told. */
  progress?: Progress;
}

/** What `collectArtifacts` is given: the run, the rules, and where to report how far it is. */
export interface ArtifactTarget {
  runId: string;
  cwd: string;
  settings: ArtifactSettings;
  runDir: string;
  progress?: Progress;
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
  /** How many processes of its tree were still there when it ended, and were stopped. */
  leftovers?: number;
}

/** A started (or re-found) command. */
export interface StartedProcess {
  /** False when the command could not be started at all; `exited` has already settled then. */
  spawned: boolean;
  /** Facts to record in run.json under `backend` (pids, container id...), enough for `adopt`. Never secrets. */
  details: Record<string, unknown>;
  /**
   * Settles once the command really executes (a Kubernetes pod's main
   * container started); absent when it executes as soon as `start` returns.
   * Until then the run stays `pending`, with what it waits for in its record.
   */
  running?: Promise<void>;
  /**
   * When the command started, where that was before this `start` (a
   * supervisor that died had started it, and this start adopted it): the
   * run's `startedAt`, rather than the moment it was adopted.
   */
  startedAt?: Date;
  /** Settles once the command has ended (or is known to be lost); never rejects. */
  exited: Promise<ExitInfo>;
  /** Signals everything the run started (its process tree, its container). Safe after exit. */
  signal(signal: NodeJS.Signals): void;
  /**
   * How it ended if it has ended (after collecting what must be collected
   * first, such as the rest of its output), undefined while it runs. Never rejects.
   */
  state(): Promise<ExitInfo | undefined>;
  /** The process group of the command when it runs on this machine: sampled for CPU and memory. */
  localProcessGroup?: number;
  /**
   * Present when the run's files are not on this machine: brings the watched
   * directories home into the run directory's files/ and writes artifacts.json.
   */
  collectArtifacts?(target: ArtifactTarget): Promise<ArtifactManifest>;
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
 * code QWEX_BACKEND_UNAVAILABLE, saying why), or with the signal's reason
 * when `io.signal` aborts first. `start` is idempotent per run: when an
 * earlier supervisor (since gone) already started this run, it returns that
 * command, adopted, instead of starting a second one. `adopt` finds a
 * command started by another process from the details it recorded, so that
 * a run outlives whoever started it.
 */
export interface Backend {
  readonly name: string;
  start(job: Job, io: RunIO): Promise<StartedProcess>;
  adopt(details: Record<string, unknown>, dir: string): StartedProcess;
}

/** What generic code may know of a backend without loading it. */
export interface BackendTraits {
  /** Jobs carry a ContainerConfig (image, resources, mounts...). */
  readonly container: boolean;
  /** The command runs on another machine from the run's workspace snapshot, which the backend sends itself. */
  readonly remote: boolean;
  /**
   * The command's output reaches the run's log files only while some process
   * supervises it (it is copied from the backend). A run of such a backend
   * whose supervisor died is re-adopted as soon as it is looked at.
   */
  readonly outputNeedsSupervisor: boolean;
  /** Placed by a cluster's scheduler: it takes none of qwexd's local slots. */
  readonly clusterScheduled: boolean;
}

/** A command-line flag a backend takes, shared by `qwex run` and `qwex submit`. */
export interface BackendFlag {
  /** Commander's flag syntax, e.g. '--host <name>' or '--no-sync'. */
  flags: string;
  description: string;
  /** The key of the run's options it sets (`--no-sync` sets `sync: false`). */
  key: string;
  /** Values a shell offers for it on Tab (hosts, contexts), read cheaply from files: no backend is loaded. */
  values?(project: string): Promise<string[]>;
}

/** What `qwex init` found of a backend on this machine. */
export interface Detection {
  /** Whether it can be used as it was found (an engine answers, a host is configured). */
  found: boolean;
  /** One line: what was found, or what is missing ("Docker engine 24.0.7 at unix:///var/run/docker.sock"). */
  summary: string;
  /** The `backends.<name>` section for qwex.yaml (written commented out when not found). */
  config?: Record<string, unknown>;
}

/** What the caller asked for, for `resolveJob`. */
export interface BackendJobInput {
  /** backends.<name> from the configuration, already validated by the descriptor's config schema. */
  config: Record<string, unknown>;
  /** This run's own options (flags, a job spec's keys), only keys in `optionKeys`. */
  options: Record<string, unknown>;
  /** Container flags, for a container backend. */
  container: ContainerSpec | undefined;
  /** The run's working directory (mount sources resolve against it) and project root. */
  cwd: string;
  project: string;
}

export interface BackendJob {
  backendOptions: Record<string, unknown>;
  container?: ContainerConfig;
}

/** A leftover on the backend that no active run accounts for (a container, a Job). */
export interface Orphan {
  /** The backend's own id for it (a container id, a Job name). */
  id: string;
  /** What it is, as a person would name it: "container qwex-0190... (exited)", "Job ns/qwex-0190...". */
  what: string;
  runId: string;
  /** Why it counts as an orphan. */
  reason: string;
  remove(): Promise<void>;
}

/** Where the orphan check looked, and what it found there. */
export interface OrphanReport {
  backend: string;
  /** The engine or cluster, as a person would name it. */
  where: string;
  reachable: boolean;
  error?: string;
  orphans: Orphan[];
}

export interface OrphanContext {
  /** The project's `backends` sections, and the backend it runs on by default. */
  config: { backend: string; backends: Record<string, Record<string, unknown>> } | undefined;
  /** The `backend` details of this project's recorded runs of the named backends (their contexts, engines...). */
  recorded(backends: readonly string[]): Record<string, unknown>[];
  /** Whether the run in this directory is pending or running (undefined: no readable record there). */
  isActive(runDir: string): boolean | undefined;
  /** The run directory of a run of a project. */
  runDir(project: string, runId: string): string;
}

/** What a run waits for before its command executes, from its record. */
export interface Waiting {
  phase: 'queued' | 'pending';
  reason?: string;
  message?: string;
  /** 1-based place in the backend's queue, where it says. */
  position?: number;
  /** Where it waits, as a person would name it: "Kueue LocalQueue gpu". */
  where?: string;
}

/**
 * A backend as generic code sees it: its traits, its options and flags, how
 * its record details are shown, and the loader of its implementation. A
 * backend's folder exports its descriptor(s) from index.ts; that module
 * stays small (no heavy imports), since `qwex ps` loads every descriptor.
 * Nothing outside the folder names the backend or reads its details.
 */
export interface BackendDescriptor {
  readonly name: string;
  /** One line for help and `qwex init`. */
  readonly summary: string;
  readonly traits: BackendTraits;
  /** Flags of `qwex run` / `qwex submit` for this backend (container flags come with the `container` trait). */
  readonly flags: readonly BackendFlag[];
  /** Keys a run's options may set (from flags and job specs). */
  readonly optionKeys: readonly string[];
  /** The zod schema of `backends.<name>` in qwex.yaml; loaded only when a config file is read. */
  configSchema(z: Zod): ZodType;
  /** Checks the run's options against the config and turns them into what the record keeps. Throws QwexError (QWEX_USAGE) on bad input. */
  resolveJob(input: BackendJobInput): BackendJob;
  /** For a remote backend: whether this job's workspace snapshot is sent (default true; a Kubernetes run with sync off sends none). */
  sendsWorkspace?(job: Job): boolean;
  /** What a pending run waits for (a cluster queue, a pod being scheduled), from its record. */
  waiting?(run: Run): Waiting | undefined;
  /** Where a run runs, for listings and servers: its cluster (a kubeconfig context) and queue, when it has them. */
  place?(run: Run): { cluster?: string; queue?: string };
  /** Extra lines for `qwex status`. */
  describe?(run: Run): [label: string, value: string][];
  /** The command's local process group, when it runs on this machine (for live CPU/memory). */
  processGroup?(run: Run): number | undefined;
  /** What `qwex doctor` should say of this backend's set-up on this machine (the helper program it uses, say). */
  health?(): { label: string; value: string }[];
  /** What this machine has of the backend (an engine, SSH hosts, kubeconfig contexts), for `qwex init`: quick, and never rejects. */
  detect?(): Promise<Detection>;
  /** Finds leftovers of runs that no active run accounts for; undefined when there is nothing to check. */
  findOrphans?(context: OrphanContext): Promise<OrphanReport[] | undefined>;
  /** Loads the implementation (lazily: `qwex ps` never loads a backend). */
  load(): Promise<Backend>;
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
