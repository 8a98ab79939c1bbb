import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { BACKENDS } from '../src/backends/registry.js';
import { ErrorCode, QwexError, errnoCode } from '../src/errors.js';
import { notifySectionSchema, readNotifySection, type NotifySection } from '../src/notify/config.js';

/**
 * qwexcloud's configuration: built-in defaults < the config file (YAML,
 * `--config`) < $QWEXCLOUD_DATA and $QWEXCLOUD_DB < command-line flags. Keys are snake_case, as in
 * qwex.yaml. docs/cloud-server.md has the reference.
 */
export const DEFAULT_PORT = 8470;
export const DEFAULT_LISTEN = `127.0.0.1:${DEFAULT_PORT}`;

/**
 * Backends a target may use: every backend of this version that runs on
 * this host or in a cluster. Those that reach other machines with the
 * submitter's own identity are left out: a server has none to lend. That
 * is ssh (remote, not cluster-scheduled), and a relay to another server,
 * known by its taking a `target` of its own.
 */
export const TARGET_BACKENDS: readonly string[] = BACKENDS.filter((b) => (!b.traits.remote || b.traits.clusterScheduled) && !b.optionKeys.includes('target')).map((b) => b.name);
export type TargetBackend = string;

/**
 * Where runs go: a named place of one backend. Runs name a target (or get
 * the first that fits their backend and queue). `labels` and `weight` are
 * recorded for placement by labels and health, which a later version adds.
 */
export interface Target {
  name: string;
  backend: TargetBackend;
  /** k8s/kueue: the kubeconfig context (default: the kubeconfig's current one). */
  context?: string;
  /** k8s/kueue: a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the pod's service account). */
  kubeconfig?: string;
  namespace?: string;
  /** kueue: the LocalQueues runs may name; the first is the default. */
  queues: string[];
  labels: Record<string, string>;
  weight: number;
  /** Container targets: the image runs get unless they name one (when `any_image`). */
  image?: string;
  /** Whether a run may name its own image (default true when the target sets none). */
  anyImage: boolean;
  /** The rest of the backend's settings, as in qwex.yaml's backends.<name> (pull, cpus, memory, mounts, pending_timeout_seconds...). */
  options: Record<string, unknown>;
}

export interface Limits {
  /** Request bodies in general (bytes). */
  bodyBytes: number;
  /** POST /v1/runs, whose body carries the workspace manifest (bytes). */
  submitBytes: number;
  /** One uploaded blob (bytes). */
  uploadBytes: number;
  /** Requests per token per window. */
  rateMax: number;
  rateWindowMs: number;
}

export interface ServerConfig {
  listen: { host: string; port: number };
  data: string;
  /** `sqlite:PATH` or a postgres:// URL. */
  db: string;
  targets: Target[];
  /** Local and docker runs at once (cluster runs are the cluster's to schedule). */
  concurrency: number;
  tls?: { cert: string; key: string };
  /** Trust X-Forwarded-* from a TLS-terminating proxy in front (client addresses in logs and rate limits). */
  trustProxy: boolean;
  limits: Limits;
  logLevel: string;
  /** Who is told when runs end: the team's targets (every run) and each user's own (docs/notifications.md). */
  notify: ServerNotify;
  /** How often each cluster target's API is checked (health, Kueue's queues). */
  clusterCheckMs: number;
}

export interface ServerNotify {
  team: NotifySection | undefined;
  users: Record<string, NotifySection>;
}

export const DEFAULT_CLUSTER_CHECK_MS = 10_000;

export const DEFAULT_LIMITS: Limits = {
  bodyBytes: 1024 * 1024,
  submitBytes: 64 * 1024 * 1024,
  uploadBytes: 1024 * 1024 * 1024,
  rateMax: 1200,
  rateWindowMs: 60_000,
};

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

const targetSchema = z.strictObject({
  name: z.string().regex(NAME, 'expected a name of lowercase letters, digits and - (at most 63)'),
  backend: z.enum(TARGET_BACKENDS as [string, ...string[]]),
  context: z.string().min(1).optional(),
  kubeconfig: z.string().min(1).optional(),
  namespace: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a namespace name').optional(),
  queues: z.array(z.string().min(1)).optional(),
  labels: z.record(z.string(), z.string()).optional(),
  weight: z.number().nonnegative().optional(),
  image: z.string().min(1).optional(),
  any_image: z.boolean().optional(),
  options: z.record(z.string(), z.unknown()).optional(),
});

const fileSchema = z.strictObject({
  listen: z.string().optional(),
  data: z.string().min(1).optional(),
  db: z.string().min(1).optional(),
  concurrency: z.number().int().positive().optional(),
  trust_proxy: z.boolean().optional(),
  log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
  tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
  limits: z
    .strictObject({
      body_bytes: z.number().int().positive().optional(),
      submit_bytes: z.number().int().positive().optional(),
      upload_bytes: z.number().int().positive().optional(),
      rate_max: z.number().int().positive().optional(),
      rate_window_seconds: z.number().positive().optional(),
    })
    .optional(),
  targets: z.array(targetSchema).optional(),
  cluster_check_seconds: z.number().positive().optional(),
  notify: notifySectionSchema
    .extend({
      users: z.record(z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'expected a user name'), notifySectionSchema.pick({ on: true, targets: true, waiting_longer_than: true })).optional(),
    })
    .optional(),
});

type FileConfig = z.infer<typeof fileSchema>;

/** What the command line gave (undefined: not given). */
export interface ConfigFlags {
  config?: string;
  listen?: string;
  data?: string;
  db?: string;
  /** `--target BACKEND` or `--target NAME=BACKEND`, repeatable: replaces the file's targets. */
  target?: string[];
  concurrency?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export function loadServerConfig(flags: ConfigFlags, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const file = flags.config === undefined ? {} : readFile(flags.config);
  const data = resolve(flags.data ?? env.QWEXCLOUD_DATA ?? file.data ?? '/var/lib/qwexcloud');
  const db = flags.db ?? env.QWEXCLOUD_DB ?? file.db ?? `sqlite:${join(data, 'qwexcloud.db')}`;
  checkDbUrl(db);
  const targets = flags.target && flags.target.length > 0 ? flags.target.map(targetFromFlag) : (file.targets ?? []).map(fromFile);
  const names = new Set<string>();
  for (const t of targets) {
    if (names.has(t.name)) throw usage(`two targets are named "${t.name}"`, 'target names must be unique');
    names.add(t.name);
  }
  const concurrency = flags.concurrency === undefined ? (file.concurrency ?? availableParallelism()) : Number(flags.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1) throw usage(`--concurrency: "${flags.concurrency}" is not a whole number of at least 1`);
  const tlsCert = flags.tlsCert ?? file.tls?.cert;
  const tlsKey = flags.tlsKey ?? file.tls?.key;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw usage('--tls-cert and --tls-key go together', 'give both, or neither to serve plain HTTP (behind a TLS-terminating proxy)');
  const limits = file.limits ?? {};
  return {
    listen: parseListen(flags.listen ?? file.listen ?? DEFAULT_LISTEN),
    data,
    db,
    targets,
    concurrency,
    ...(tlsCert !== undefined && tlsKey !== undefined ? { tls: { cert: resolve(tlsCert), key: resolve(tlsKey) } } : {}),
    trustProxy: file.trust_proxy ?? false,
    limits: {
      bodyBytes: limits.body_bytes ?? DEFAULT_LIMITS.bodyBytes,
      submitBytes: limits.submit_bytes ?? DEFAULT_LIMITS.submitBytes,
      uploadBytes: limits.upload_bytes ?? DEFAULT_LIMITS.uploadBytes,
      rateMax: limits.rate_max ?? DEFAULT_LIMITS.rateMax,
      rateWindowMs: limits.rate_window_seconds === undefined ? DEFAULT_LIMITS.rateWindowMs : limits.rate_window_seconds * 1000,
    },
    logLevel: file.log_level ?? 'info',
    notify: readServerNotify(file.notify, flags.config),
    clusterCheckMs: file.cluster_check_seconds === undefined ? DEFAULT_CLUSTER_CHECK_MS : file.cluster_check_seconds * 1000,
  };
}

/** The team's section and each user's; a user's email targets use the team's SMTP server unless they name their own. */
function readServerNotify(file: FileConfig['notify'], configPath: string | undefined): ServerNotify {
  if (file === undefined) return { team: undefined, users: {} };
  const { users = {}, ...team } = file;
  const root = configPath === undefined ? process.cwd() : dirname(resolve(configPath));
  const where = `${configPath ?? 'the configuration'}: notify`;
  return {
    team: readNotifySection(team, root, where),
    users: Object.fromEntries(Object.entries(users).map(([user, section]) => [user, readNotifySection({ ...section, ...(team.smtp ? { smtp: team.smtp } : {}) }, root, `${where}.users.${user}`)])),
  };
}

/** `HOST:PORT`, `:PORT` or `PORT`; `[::1]:PORT` for IPv6. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw usage(`--listen: "${text}" is not HOST:PORT`, `e.g. --listen 127.0.0.1:${DEFAULT_PORT}, or 0.0.0.0:${DEFAULT_PORT} to accept other machines`);
  }
  return { host: match[1] || match[2] || '127.0.0.1', port };
}

function checkDbUrl(db: string): void {
  if (db.startsWith('sqlite:') && db.length > 'sqlite:'.length) return;
  if (/^postgres(ql)?:\/\//.test(db)) return;
  throw usage('--db: expected sqlite:PATH or postgres://USER@HOST/DATABASE', 'e.g. --db sqlite:/var/lib/qwexcloud/qwexcloud.db');
}

function targetFromFlag(text: string): Target {
  const [name, backend] = text.includes('=') ? (text.split('=', 2) as [string, string]) : [text, text];
  const parsed = targetSchema.safeParse({ name, backend });
  if (!parsed.success) {
    throw usage(`--target: "${text}" is not BACKEND or NAME=BACKEND`, `backends: ${TARGET_BACKENDS.join(', ')}; a config file (--config) sets the rest of a target`);
  }
  return fromFile(parsed.data);
}

function fromFile(t: z.infer<typeof targetSchema>): Target {
  return {
    name: t.name,
    backend: t.backend,
    ...(t.context === undefined ? {} : { context: t.context }),
    ...(t.kubeconfig === undefined ? {} : { kubeconfig: resolve(t.kubeconfig) }),
    ...(t.namespace === undefined ? {} : { namespace: t.namespace }),
    queues: t.queues ?? [],
    labels: t.labels ?? {},
    weight: t.weight ?? 1,
    ...(t.image === undefined ? {} : { image: t.image }),
    anyImage: t.any_image ?? t.image === undefined,
    options: t.options ?? {},
  };
}

function readFile(path: string): FileConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new QwexError(ErrorCode.ConfigInvalid, `cannot read ${path}: ${errnoCode(error) ?? (error as Error).message}`, { hint: 'check the path given to --config' });
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new QwexError(ErrorCode.ConfigInvalid, `${path}: invalid YAML: ${doc.errors[0]!.message.split('\n')[0]}`, { hint: 'fix the YAML syntax at the line shown' });
  }
  const result = fileSchema.safeParse(doc.toJS() ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = [...issue.path.map(String), ...(issue.code === 'unrecognized_keys' ? [issue.keys[0] ?? ''] : [])].join('.') || '(top level)';
    throw new QwexError(ErrorCode.ConfigInvalid, `${path}: ${key}: ${issue.code === 'unrecognized_keys' ? 'unknown key' : issue.message}`, {
      hint: 'see "Configuration reference" in docs/cloud-server.md',
      details: { file: path, key },
    });
  }
  return result.data;
}

function usage(message: string, hint?: string): QwexError {
  return new QwexError(ErrorCode.Usage, message, hint === undefined ? {} : { hint });
}
