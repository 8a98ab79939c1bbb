import type { ContainerConfig, ResourceRequirements } from '../config/container.js';
import type { NotifySpec } from '../notify/spec.js';
import { ErrorCode, QwexError } from '../errors.js';

/**
 * A Job is the recipe; a Run is one execution of it. `run.json` holds a Run,
 * and that file is the record: the SQLite index is a cache rebuilt from it.
 */
export interface ArtifactSettings {
  /** Directories, relative to the job's working directory, scanned after the command exits. */
  watch: string[];
  /** gitignore-style patterns; a match is never captured. */
  ignore: string[];
  /** Files larger than this are skipped (and listed as skipped). */
  maxFileSizeMb: number;
}

export interface Job {
  /** argv; with `shell` true, a single string run by `/bin/sh -c`. */
  command: string[];
  shell: boolean;
  /** Absolute working directory. */
  cwd: string;
  /** Variables added to the inherited environment. Values of secret-looking names are redacted when shown. */
  env: Record<string, string>;
  backend: string;
  backendOptions: Record<string, unknown>;
  artifacts: ArtifactSettings;
  /** Between SIGTERM and SIGKILL when a run is cancelled or times out. */
  killGraceMs: number;
  /** Wall-clock limit; the run is stopped and fails with endReason `timeout`. */
  timeoutMs?: number;
  name?: string;
  /** Set when the run executes in its own copy of a workspace snapshot instead of the project in place. */
  workspace?: WorkspaceSpec;
  /** Image, user, mounts and resources, for the container backends. */
  container?: ContainerConfig;
  /**
   * GPUs of this machine for a backend that runs the command here outside a
   * container (a container's are in `container.resources.gpus`): how many,
   * every one, or which (indexes or UUIDs). qwexd hands them out (`Run.gpus`).
   */
  gpus?: ResourceRequirements['gpus'];
  /** The run asked for no GPUs and may see every GPU of this machine anyway (config `unrequested_gpus: all`); otherwise it sees none. */
  allGpusVisible?: boolean;
  // How this run relates to other runs. They live in the job, not beside it, because a run's record is
  // created from its job in one write: a link recorded later could be lost to a crash in between.
  /** The named job (qwex.yaml `jobs:`) this run executes, its version and the parameters it was given. */
  recipe?: RecipeRef;
  /** Retry a run that ends failed or lost, as new runs (attempts) linked to this one. */
  retry?: RetryPolicy;
  /** Set on the second and later attempts: the first attempt's id, this attempt's number, and when it may start. */
  attempt?: AttemptRef;
  /** Runs that must end (succeed, with `require: 'success'`) before this one starts; qwexd holds it until then. */
  after?: RunDependencies;
  /** The workflow and stage this run is a stage run of (.qwex/workflows/<id>/workflow.json). */
  workflow?: WorkflowRef;
  /** The run this one replays (`qwex rerun`). */
  rerunOf?: string;
  /** Who is told when the run ends (or waits too long), resolved from the configuration and --notify at submission. */
  notify?: NotifySpec;
}

export interface RecipeRef {
  name: string;
  /** A hash of the job's definition: a changed definition has another version. */
  version: string;
  params: Record<string, string>;
}

export type RetryOn = 'failed' | 'lost';

export interface RetryPolicy {
  /** Attempts after the first: at most `limit + 1` runs in all. */
  limit: number;
  on: RetryOn[];
  /** Wait before the second attempt; each later one waits twice as long as the one before. */
  backoffMs: number;
}

export interface AttemptRef {
  /** The first attempt's run id. */
  of: string;
  /** 2 for the first retry. */
  number: number;
  /** Not started before this time (the backoff), ISO 8601. */
  notBefore?: string;
}

export interface RunDependencies {
  runs: string[];
  /** `success`: every run must succeed, else this one is cancelled; `end`: they only need to have ended. */
  require: 'success' | 'end';
}

export interface WorkflowRef {
  id: string;
  stage: string;
}

/** A GPU of this machine that qwexd handed to a run: its CUDA_VISIBLE_DEVICES names the UUID. */
export interface RunGpu {
  /** nvidia-smi's index (a label: it can change across reboots; the UUID does not). */
  index: number;
  uuid: string;
  name: string;
}

export interface WorkspaceSpec {
  mode: 'snapshot';
  /** The snapshot's manifest id in the content store. */
  manifest: string;
  /** The working directory relative to the project root ('' for the root): the same place in the copy. */
  cwd: string;
}

export interface Provenance {
  manifest?: string;
  git?: { commit: string; branch: string | null; dirty: boolean };
}

export const RunStatus = {
  Pending: 'pending',
  Running: 'running',
  Succeeded: 'succeeded',
  Failed: 'failed',
  Cancelled: 'cancelled',
  Lost: 'lost',
} as const;
export type RunStatus = (typeof RunStatus)[keyof typeof RunStatus];

export const RUN_STATUSES: readonly RunStatus[] = Object.values(RunStatus);

/** Why a run ended. `error` means qwex could not start it or lost track while starting it. */
export type EndReason = 'exit' | 'signal' | 'cancel' | 'timeout' | 'lost' | 'error';

export interface RunError {
  code: string;
  message: string;
}

export interface ArtifactSummary {
  count: number;
  bytes: number;
  skipped: number;
  /** Set when capture failed part-way; the run's status still reflects the command's exit. */
  error?: string;
}

export interface RunMetadata {
  host: string;
  user: string;
  qwexVersion: string;
}

export interface Run {
  /** Shape version of run.json. */
  version: 1;
  id: string;
  /** Absolute path of the project root the run belongs to. */
  project: string;
  job: Job;
  status: RunStatus;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  exitCode: number | null;
  signal: string | null;
  endReason?: EndReason;
  error?: RunError;
  /** The backend's name, and what it records to find the command again (its own type, in its folder). */
  backend: { name: string } & Record<string, unknown>;
  artifacts?: ArtifactSummary;
  /** Processes of the run's tree still there when its command ended, which were stopped then. */
  leftovers?: number;
  /** Peak use of the run's process tree, sampled while it ran. */
  resources?: { peakRssBytes: number; cpuSeconds: number };
  /** Which code ran: the workspace snapshot and the git state when it was submitted. */
  provenance?: Provenance;
  /** Who starts the run: `direct` (the CLI, at once) or `qwexd` (its queue). */
  supervisor?: 'direct' | 'qwexd';
  /** The GPUs qwexd's ledger handed to the run, recorded before it starts; held until it ends. */
  gpus?: RunGpu[];
  metadata: RunMetadata;
}

const TERMINAL: ReadonlySet<RunStatus> = new Set(['succeeded', 'failed', 'cancelled', 'lost']);

const LEGAL: Readonly<Record<RunStatus, readonly RunStatus[]>> = {
  pending: ['running', 'failed', 'cancelled', 'lost'],
  running: ['succeeded', 'failed', 'cancelled', 'lost'],
  succeeded: [],
  failed: [],
  cancelled: [],
  lost: [],
};

export function isTerminal(status: RunStatus): boolean {
  return TERMINAL.has(status);
}

export function canTransition(from: RunStatus, to: RunStatus): boolean {
  return LEGAL[from].includes(to);
}

/**
 * Returns the run moved to `to` with `patch` applied. Throws on an illegal
 * transition, so a finished run can never be reopened or finished twice.
 */
export function transition(run: Run, to: RunStatus, patch: Partial<Omit<Run, 'status' | 'id' | 'version'>> = {}): Run {
  if (!canTransition(run.status, to)) {
    throw new QwexError(ErrorCode.InvalidTransition, `run ${run.id} cannot go from ${run.status} to ${to}`);
  }
  const now = new Date().toISOString();
  const next: Run = { ...run, ...patch, status: to };
  if (to === 'running' && next.startedAt === undefined) next.startedAt = now;
  if (isTerminal(to) && next.finishedAt === undefined) next.finishedAt = now;
  return next;
}

/** The exit code a CLI reports for a finished run (0 for success, 128+n for signal n). */
export function exitCodeOf(run: Run): number {
  switch (run.status) {
    case 'succeeded':
      return 0;
    case 'cancelled':
      return 130;
    case 'lost':
      return 125;
    default:
      if (run.exitCode !== null && run.exitCode !== 0) return run.exitCode;
      if (run.signal !== null) return 128 + signalNumber(run.signal);
      return 1;
  }
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8, SIGKILL: 9,
  SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15, SIGXCPU: 24, SIGXFSZ: 25,
};

export function signalNumber(signal: string): number {
  return SIGNALS[signal] ?? 0;
}

/** The command as a person would type it, for listings. */
export function displayCommand(job: Pick<Job, 'command' | 'shell'>): string {
  if (job.shell) return job.command[0] ?? '';
  return job.command.map(quoteArg).join(' ');
}

function quoteArg(arg: string): string {
  if (arg !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}
