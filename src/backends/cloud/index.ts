import { definedOnly, parseResources, type ContainerSpec } from '../../config/container.js';
import { findLogin, normaliseServerUrl } from '../../cloud/credentials.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { isTerminal, type Run, type RunStatus } from '../../run/model.js';
import type { BackendDescriptor, BackendJobInput, Waiting } from '../types.js';

/** backends.cloud in qwex.yaml, and what a run's options may set. */
export interface CloudOptions {
  /** The server (its token comes from `qwex login`); default: the server logged in to last. */
  url?: string;
  target?: string;
  cluster?: string;
  queue?: string;
  /** For container targets: an image (where the target allows one) and resources, as the server takes them. */
  container?: { image?: string; cpus?: number | string; memory?: number | string; gpus?: number | string; env?: Record<string, string> };
}

/**
 * What the cloud backend records in run.json under `backend`: the server
 * and its record of the run (never the token, which stays in the user's
 * credentials file and is looked up by the server's URL).
 */
// A type, not an interface: a record of it is a StartedProcess's `details` (an index signature's shape).
export type CloudDetails = {
  server?: string;
  /** The key the submit was made with (the local run id): the server never makes a second run for it. */
  submitKey?: string;
  serverRunId?: string;
  /** Who the server says the run belongs to. */
  user?: string;
  target?: string;
  /** The backend the server runs it on (local, docker, k8s, kueue). */
  serverBackend?: string;
  cluster?: string | null;
  queue?: string | null;
  /** The server's status of the run as last seen, and what it waits for there (as its backend there says: a kueue run can be running while Kueue holds its Job). */
  serverStatus?: RunStatus;
  waiting?: Waiting | null;
  /** What the submit had to upload (nothing when the server had every file already). */
  uploaded?: { files: number; bytes: number };
  /** Why the output stopped coming, while the server cannot be reached or refuses the token; null once it is back. */
  problem?: string | null;
};

const CONTAINER_KEYS = ['image', 'cpus', 'memory', 'gpus', 'env'] as const;

function details(run: Run): CloudDetails {
  return run.backend as CloudDetails;
}

function resolveJob(input: BackendJobInput): ReturnType<BackendDescriptor['resolveJob']> {
  const config = input.config as CloudOptions & Record<string, unknown>;
  const spec: ContainerSpec = input.container ?? {};
  const refused = (['pull', 'user', 'network', 'mounts'] as const).filter((k) => spec[k] !== undefined && !(k === 'mounts' && spec.mounts?.length === 0));
  if (refused.length > 0) {
    throw new QwexError(ErrorCode.Usage, `--${refused[0] === 'mounts' ? 'mount' : refused[0]} is the server's to set for a cloud run`, {
      hint: 'a cloud run may choose an image (where its target allows one), cpus, memory and gpus',
    });
  }
  const container = definedOnly({
    ...Object.fromEntries(CONTAINER_KEYS.map((k) => [k, config[k]])),
    ...definedOnly({ image: spec.image, cpus: spec.cpus, memory: spec.memory, gpus: spec.gpus }),
    ...(config.env || spec.env ? { env: { ...(config.env as Record<string, string> | undefined), ...spec.env } } : {}),
  }) as NonNullable<CloudOptions['container']>;
  // Checked here so that a bad value fails before the run is recorded; the server gets them as given.
  parseResources(container, '--backend cloud');
  // Checked now, so that a run nobody could send is never recorded.
  const named = typeof config.url === 'string' ? normaliseServerUrl(config.url) : undefined;
  const url = findLogin(named)?.url;
  if (url === undefined) {
    throw new QwexError(ErrorCode.Unauthorized, named === undefined ? 'not logged in to a qwexcloud server' : `not logged in to ${named} (backends.cloud.url)`, {
      hint: `run: qwex login ${named ?? 'URL'}`,
    });
  }
  const pick = (key: 'target' | 'cluster' | 'queue'): string | undefined => {
    const value = input.options[key] ?? config[key];
    if (value !== undefined && (typeof value !== 'string' || value === '')) throw new QwexError(ErrorCode.Usage, `--${key}: expected a name`);
    return value;
  };
  const options: CloudOptions = definedOnly({ url, target: pick('target'), cluster: pick('cluster'), queue: pick('queue') });
  if (Object.keys(container).length > 0) options.container = container;
  return { backendOptions: options as Record<string, unknown> };
}

function waiting(run: Run): Waiting | undefined {
  const d = details(run);
  if (isTerminal(run.status) || (d.serverStatus !== 'pending' && !d.waiting)) return undefined;
  const host = hostOf(d.server);
  const there = d.waiting ?? undefined;
  return {
    phase: there?.phase ?? 'queued',
    ...(there?.reason ? { reason: there.reason } : {}),
    ...(there?.message ? { message: there.message } : {}),
    ...(there?.position === undefined ? {} : { position: there.position }),
    where: `qwexcloud ${host}${there?.where ? `: ${there.where}` : d.target ? ` (target ${d.target})` : ''}`,
  };
}

function place(run: Run): { cluster?: string; queue?: string } {
  const d = details(run);
  const options = run.job.backendOptions as CloudOptions;
  const cluster = d.cluster ?? options.cluster;
  const queue = d.queue ?? options.queue;
  return { ...(cluster ? { cluster } : {}), ...(queue ? { queue } : {}) };
}

function describe(run: Run): [string, string][] {
  const d = details(run);
  const server = d.server ?? (run.job.backendOptions as CloudOptions).url;
  const lines: [string, string][] = [];
  if (server) lines.push(['server', `${server}${d.user ? ` (as ${d.user})` : ''}`]);
  if (d.serverRunId) lines.push(['server run', `${d.serverRunId}${d.serverStatus && d.serverStatus !== run.status ? ` (${d.serverStatus} there)` : ''}`]);
  if (d.target) {
    const where = [d.serverBackend, d.cluster && d.cluster !== d.target && `cluster ${d.cluster}`, d.queue && `queue ${d.queue}`].filter(Boolean).join(', ');
    lines.push(['target', `${d.target}${where ? ` (${where})` : ''}`]);
  }
  if (d.uploaded) lines.push(['uploaded', d.uploaded.files === 0 ? 'nothing (the server had every file)' : `${d.uploaded.files} file(s), ${d.uploaded.bytes} bytes`]);
  if (d.problem) lines.push(['problem', d.problem]);
  return lines;
}

function hostOf(url: string | undefined): string {
  try {
    return url === undefined ? '?' : new URL(url).host;
  } catch {
    return url ?? '?'; // not a URL (only TypeError is possible): shown as it is
  }
}

/** A run relayed to a qwexcloud server, which runs it on one of its targets and keeps its history. */
export const cloud: BackendDescriptor = {
  name: 'cloud',
  summary: 'a qwexcloud server (qwex login URL first), on one of its targets',
  // The server schedules it (no local slot), on its host or a cluster; the output comes home while a supervisor copies it.
  traits: { container: true, remote: true, outputNeedsSupervisor: true, clusterScheduled: true },
  flags: [
    { flags: '--target <name>', description: 'cloud: the server\'s target to run on (default: the first that fits)', key: 'target' },
    { flags: '--cluster <name>', description: 'cloud: run on this cluster of the server (a target name or a Kubernetes context)', key: 'cluster' },
    { flags: '--queue <name>', description: 'the Kueue LocalQueue of a queued Kubernetes run', key: 'queue' },
  ],
  optionKeys: ['target', 'cluster', 'queue'],
  configSchema: (z) =>
    z.strictObject({
      url: z.string().url().optional(),
      target: z.string().min(1).optional(),
      cluster: z.string().min(1).optional(),
      queue: z.string().min(1).optional(),
      image: z.string().min(1).optional(),
      cpus: z.union([z.number(), z.string()]).optional(),
      memory: z.union([z.number(), z.string()]).optional(),
      gpus: z.union([z.number(), z.string()]).optional(),
      env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name'), z.string()).optional(),
    }),
  resolveJob,
  waiting,
  place,
  describe,
  load: async () => new (await import('./backend.js')).CloudBackend(),
};
