import type { Waiting } from '../backends/types.js';
import type { RunStatus, Run } from '../run/model.js';

export type { Waiting } from '../backends/types.js';

/**
 * The shapes qwexcloud's HTTP API speaks (version 1), shared by the server
 * (server/) and its client (src/cloud/client.ts). The server's JSON schemas
 * (server/schemas.ts) validate and serialise exactly these; the OpenAPI
 * document built from them is docs/cloud-api.json.
 */
export const API_VERSION = 'v1';
export const API_PREFIX = `/${API_VERSION}`;

/** Bearer tokens start with this, so that a leaked one is recognisable (secret scanners, logs). */
export const TOKEN_PREFIX = 'qwx_';

export const LOG_STREAMS = ['stdout', 'stderr'] as const;
export type LogStream = (typeof LOG_STREAMS)[number];

/** One run as listed: what a table of runs shows, from SQL alone. */
export interface CloudRun {
  id: string;
  user: string;
  /** The server's target it was sent to (a name from its configuration, kept after the target is removed). */
  target: string;
  backend: string;
  /** The cluster a cluster run was placed on: its target's name (a kubeconfig context is unique only within one kubeconfig), else null. */
  cluster: string | null;
  /** The Kueue LocalQueue of a kueue run, else null. */
  queue: string | null;
  name: string | null;
  command: string;
  status: RunStatus;
  exitCode: number | null;
  signal: string | null;
  endReason: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** When the server last recorded a change of this run. */
  updatedAt: string;
  /** What the run waits for before its command executes (its place in a queue, Kueue's reason), as its backend says; absent otherwise. */
  waiting?: Waiting;
  /** The named job (recipe) this is a run of, when it came from one. */
  job?: string;
  /** The workflow this run is a stage of. */
  workflow?: { id: string; stage: string };
}

/** A run with its full record (run.json as qwex writes it; secret-looking env values redacted). */
export interface CloudRunDetail extends CloudRun {
  record: Run;
  /** Why a pending run has not started (its cluster is unhealthy...), when the server holds it back. */
  waitReason?: string;
}

export interface RunPage {
  runs: CloudRun[];
  /** Pass as `cursor` for the next (older) page; null on the last page. */
  nextCursor: string | null;
}

/** Filters of GET /v1/runs. Text filters are matched as text: `%`, `_` and quotes are data. */
export interface RunQuery {
  /** Admins only: one user's runs (others always see only their own). */
  user?: string;
  status?: RunStatus[];
  backend?: string;
  target?: string;
  /** ISO 8601 times; inclusive after, exclusive before. */
  createdAfter?: string;
  createdBefore?: string;
  /** Substring of the name or the command, case-insensitive. */
  q?: string;
  /** Runs whose id starts with this (how a CLI resolves a short id). */
  idPrefix?: string;
  /** Page size, 1 to 500 (default 50). Newest first. */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
}

/** What a run is asked to do: the same fields as a qwex job spec, minus what the server decides (where, which project). */
export interface CloudJobSpec {
  command: string | string[];
  shell?: boolean;
  env?: Record<string, string>;
  name?: string;
  /** The working directory inside the workspace, relative ('' or absent: its root). */
  cwd?: string;
  /** Artifact directories, relative to cwd (default: out). */
  watch?: string[];
  timeoutMs?: number;
  killGraceMs?: number;
  /** For container targets: an image (when the target allows any), resources, variables. Mounts and networks are the server's to set. */
  container?: { image?: string; cpus?: number | string; memory?: number | string; gpus?: number | string; env?: Record<string, string> };
}

export interface WorkspaceFile {
  path: string;
  size: number;
  mode: number;
  sha256: string;
}

/** A workspace snapshot's manifest as sent: every file by content hash (uploaded first), and the symlinks. */
export interface WorkspaceUpload {
  files: WorkspaceFile[];
  symlinks: { path: string; target: string }[];
}

export interface SubmitRequest {
  /** A target by name; else the best that fits `backend`, `queue`, `cluster` and `labels` (docs/cloud-clusters.md). */
  target?: string;
  backend?: string;
  /** The Kueue LocalQueue, for kueue targets (one of the target's queues). */
  queue?: string;
  /** A cluster: a cluster target's name, or the Kubernetes context of one or more targets. */
  cluster?: string;
  /** Labels the run needs: only targets with all of them (e.g. { gpu: 'a100' }). */
  labels?: Record<string, string>;
  /** Notification targets of the server's configuration (the team's or the user's) to tell when the run ends, by name. */
  notify?: string[];
  job: CloudJobSpec;
  /** Absent: the run starts in an empty directory. */
  workspace?: WorkspaceUpload;
}

/**
 * The header of POST /v1/runs that makes a submit idempotent: the same key
 * (per user) with the same request answers with the run the first made
 * (200 instead of 201), never a second run. qwex sends its own run id.
 */
export const IDEMPOTENCY_HEADER = 'idempotency-key';
export const IDEMPOTENCY_KEY_PATTERN = '^[A-Za-z0-9._:-]{1,255}$';

export interface ArtifactEntry {
  path: string;
  size: number;
  sha256: string;
}

export interface ArtifactList {
  artifacts: ArtifactEntry[];
  /** What capture left out, and why (too large, outside the project...). */
  skipped: { path: string; reason: string }[];
  /** Set when capture failed part-way. */
  error: string | null;
}

export interface Me {
  user: string;
  admin: boolean;
  tokenId: string;
}

export interface TargetInfo {
  name: string;
  backend: string;
  queues: string[];
  labels: Record<string, string>;
}

/** One cluster as GET /v1/clusters and `qwexcloud clusters` show it. */
export interface ClusterInfo {
  name: string;
  /** null for a cluster only the history knows (removed from the configuration). */
  backend: string | null;
  configured: boolean;
  health: 'healthy' | 'unhealthy' | 'unknown';
  /** Why it is unhealthy. */
  reason: string | null;
  /** Since when it is what `health` says. */
  since: string | null;
  checkedAt: string | null;
  labels: Record<string, string>;
  weight: number | null;
  /** Kueue's pending workloads per LocalQueue (null where Kueue does not say). */
  queues: { name: string; pending: number | null }[];
  /** This server's runs there. */
  runs: { pending: number; running: number; total: number };
}

export interface ApiErrorBody {
  error: { code: string; message: string; hint?: string; details?: Record<string, unknown> };
}

/**
 * Server-Sent Events of GET /v1/runs/:id/logs. `chunk` carries bytes of the
 * log as base64 (binary-safe), and its event id is the byte offset just
 * after them: reconnecting with `Last-Event-ID: <id>` resumes exactly there.
 * `eof` (not following) or `end` (the run ended; data: CloudRunDetail) closes the stream.
 */
export const LogEvent = { Chunk: 'chunk', Eof: 'eof', End: 'end' } as const;

/** Server-Sent Events of GET /v1/events: `run` (data: CloudRun) whenever a visible run changes; `reset` when a resume asked for more than the server kept. */
export const FeedEvent = { Run: 'run', Reset: 'reset' } as const;

/** One sample of a run's CPU and memory (usage.jsonl): CPU percent of one core summed over its processes, resident bytes. */
export interface UsagePoint {
  t: string;
  cpu: number;
  rss: number;
  procs: number;
}

/** One look at the GPUs a run holds. Fields a sampler did not record are null. */
export interface GpuPoint {
  t: string;
  gpus: { index: number; utilizationPercent: number | null; memoryUsedMb: number | null; memoryTotalMb: number | null }[];
}

/** GET /v1/runs/:id/usage: the run's resource use over time, oldest first (thinned by the sampler as a run grows long). */
export interface RunUsage {
  samples: UsagePoint[];
  gpu: GpuPoint[];
}

/** One stage of a workflow as the dashboard shows it (issue 16's `qwex workflow status --json` plus `needs`). */
export interface WorkflowStage {
  name: string;
  /** Null until the stage's run was created. */
  runId: string | null;
  status: string;
  exitCode: number | null;
  /** Names of the stages it starts after. */
  needs: string[];
}

/** GET /v1/workflows/:id. */
export interface WorkflowView {
  id: string;
  status: string;
  stages: WorkflowStage[];
}

/**
 * The dashboard's session: the login page sends the token once (POST
 * /v1/session) and the server keeps it in this HttpOnly cookie, which the
 * API then accepts like the bearer header. A request authenticated by the
 * cookie that changes anything must also carry CSRF_HEADER: a page of
 * another site can make the browser send the cookie, never this header.
 */
export const SESSION_COOKIE = 'qwex_token';
export const CSRF_HEADER = 'x-qwex-csrf';
