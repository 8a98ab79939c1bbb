import type { Job, Provenance, Run, RunStatus } from './run/model.js';
import type { Waiting } from './backends/types.js';

export type { Waiting } from './backends/types.js';
import type { RunSummary } from './store/run-index.js';

/**
 * The qwexd protocol: JSON-RPC 2.0 over a Unix socket, one message per line.
 * This table is the whole surface: the server registers handlers for these
 * methods and nothing else, and the client calls them by these names.
 * docs/protocol.md describes it for other clients.
 *
 * Bump PROTOCOL_VERSION on any incompatible change; both sides check it in
 * `qwex.hello`.
 */
export const PROTOCOL_VERSION = 1;

export const Method = {
  hello: 'qwex.hello',
  submit: 'run.submit',
  cancel: 'run.cancel',
  get: 'run.get',
  list: 'run.list',
  subscribe: 'logs.subscribe',
  unsubscribe: 'logs.unsubscribe',
  status: 'daemon.status',
  shutdown: 'daemon.shutdown',
} as const;
export type MethodName = (typeof Method)[keyof typeof Method];

/** Server-to-client notifications. */
export const Notification = {
  logData: 'logs.data',
  logEnd: 'logs.end',
} as const;

/** Live resource use of a running run's whole process tree. */
export interface ResourceUsage {
  /** Percent of one CPU, summed over the tree. */
  cpuPercent: number;
  rssBytes: number;
  processes: number;
}

export interface RunView {
  run: Run;
  dir: string;
  /** 1-based place in qwexd's queue, for a pending run waiting there. */
  queuePosition?: number;
  /** Why a queued run waits beyond its place in the queue (its dependencies, the GPUs it asks for). */
  waitReason?: string;
  usage?: ResourceUsage;
}

export type ListedRun = RunSummary & { queuePosition?: number; waitReason?: string; usage?: ResourceUsage; waiting?: Waiting };

export interface DaemonStatus {
  version: string;
  protocolVersion: number;
  pid: number;
  startedAt: string;
  uptimeMs: number;
  socket: string;
  concurrency: number;
  runs: { queued: number; running: number };
  connections: number;
  subscriptions: number;
}

export interface Params {
  'qwex.hello': { protocolVersion: number; client?: string };
  /** Jobs are resolved by the client (config, cwd); `env` is the submitter's environment, the base for every job. */
  'run.submit': { project: string; jobs: Job[]; env: Record<string, string>; provenance?: (Provenance | null)[] };
  'run.cancel': { id: string; graceMs?: number };
  'run.get': { id: string };
  'run.list': { project?: string; statuses?: RunStatus[]; limit?: number };
  'logs.subscribe': { id: string; stdoutOffset?: number; stderrOffset?: number; streams?: ('stdout' | 'stderr')[] };
  'logs.unsubscribe': { subscription: string };
  'daemon.status': Record<string, never>;
  'daemon.shutdown': Record<string, never>;
}

export interface Results {
  'qwex.hello': { protocolVersion: number; daemonVersion: string; pid: number };
  'run.submit': { runs: Run[] };
  'run.cancel': { run: Run };
  'run.get': RunView;
  'run.list': { runs: ListedRun[] };
  'logs.subscribe': { subscription: string; runId: string };
  'logs.unsubscribe': { ok: true };
  'daemon.status': DaemonStatus;
  'daemon.shutdown': { ok: true };
}

export interface LogDataParams {
  subscription: string;
  runId: string;
  stream: 'stdout' | 'stderr';
  /** Byte offset of `data` in the stream's log file. */
  offset: number;
  /** The bytes, base64-encoded (output may be binary). */
  data: string;
}

export type LogEndReason = 'run-ended' | 'unsubscribed' | 'daemon-shutdown';

export interface LogEndParams {
  subscription: string;
  runId: string;
  reason: LogEndReason;
  /** The record as it stood when the subscription ended (final when reason is run-ended). */
  run: Run;
}

/** JSON-RPC error codes: the standard ones, and the one that carries a qwex error in `data`. */
export const RpcErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** A qwex error: `data` is `{ code, message, hint?, details? }` with qwex's stable code. */
  QwexError: -32000,
  /** The client speaks another protocol version. */
  VersionMismatch: -32001,
} as const;
