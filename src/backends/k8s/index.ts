import { containerConfigShape, resolveContainerJob } from '../../config/container.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { isTerminal, type Job, type Run } from '../../run/model.js';
import type { BackendDescriptor, BackendFlag, BackendJobInput, Waiting } from '../types.js';
import type { z, ZodType } from 'zod';

type Zod = typeof z;

/** What the Kubernetes backend records in run.json under `backend`: where the Job is, and what it waits for. */
export interface KubernetesDetails {
  context?: string;
  namespace?: string;
  job?: string;
  jobUid?: string;
  queue?: string;
  /** Where the run stands: waiting in Kueue's queue, a pod not running yet, or running. */
  phase?: 'queued' | 'pending' | 'running';
  waiting?: { reason?: string | null; message?: string | null; position?: number | null } | null;
  attempts?: { pod?: string; startedAt?: string; endedAt?: string; reason?: string; message?: string }[];
}

const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const clusterFlags: BackendFlag[] = [
  {
    flags: '--context <name>',
    description: 'the kubeconfig context of a Kubernetes run',
    key: 'context',
    values: async () => (await (await import('./kubeconfig-contexts.js')).kubeContexts()).contexts,
  },
  { flags: '--namespace <name>', description: 'the namespace of a Kubernetes run', key: 'namespace' },
  { flags: '--no-sync', description: 'Kubernetes: run the image as it is, without sending the workspace', key: 'sync' },
];

function configSchema(z: Zod): ZodType {
  return z.strictObject({
    ...containerConfigShape(z),
    context: z.string().min(1).optional(),
    namespace: z.string().regex(NAMESPACE, 'expected a namespace name (lowercase letters, digits, -)').optional(),
    queue: z.string().min(1).optional(),
    sync: z.boolean().optional(),
    retries: z.number().int().nonnegative().optional(),
    ttl_seconds_after_finished: z.number().int().nonnegative().optional(),
    pending_timeout_seconds: z.number().positive().optional(),
    artifact_timeout_seconds: z.number().positive().optional(),
    keep_jobs: z.boolean().optional(),
  });
}

function resolveClusterJob(name: string, input: BackendJobInput, requireQueue: boolean): ReturnType<BackendDescriptor['resolveJob']> {
  const { options } = input;
  if (typeof options.namespace === 'string' && !NAMESPACE.test(options.namespace)) {
    throw new QwexError(ErrorCode.Usage, `--namespace "${options.namespace}" is not a namespace name`, { hint: 'lowercase letters, digits and -' });
  }
  if (input.container && ((input.container.mounts?.length ?? 0) > 0 || input.container.network !== undefined)) {
    throw new QwexError(ErrorCode.Usage, `--mount and --network are settings of a container on this machine's engine: a ${name} run has no host paths or engine networks`, {
      hint: 'bake data into the image, or read it from storage the pod can reach',
    });
  }
  const backendOptions = { ...input.config, ...options };
  if (requireQueue && (typeof backendOptions.queue !== 'string' || backendOptions.queue === '')) {
    throw new QwexError(ErrorCode.Usage, `no queue given for a ${name} run`, { hint: `pass --queue NAME (a LocalQueue), or set backends.${name}.queue in qwex.yaml` });
  }
  if (!requireQueue) delete backendOptions.queue;
  return { backendOptions, container: resolveContainerJob(name, input) };
}

function sendsWorkspace(job: Job): boolean {
  return job.backendOptions.sync !== false;
}

function place(run: Run): { cluster?: string; queue?: string } {
  const d = details(run);
  const options = run.job.backendOptions as { context?: string; queue?: string };
  const cluster = d.context ?? options.context;
  const queue = options.queue;
  return { ...(cluster ? { cluster } : {}), ...(queue ? { queue } : {}) };
}

function details(run: Run): KubernetesDetails {
  return run.backend as KubernetesDetails;
}

function waiting(run: Run): Waiting | undefined {
  const d = details(run);
  if (isTerminal(run.status) || (d.phase !== 'queued' && d.phase !== 'pending')) return undefined;
  const w = d.waiting ?? {};
  return {
    phase: d.phase,
    ...(w.reason ? { reason: w.reason } : {}),
    ...(w.message ? { message: w.message } : {}),
    ...(typeof w.position === 'number' ? { position: w.position } : {}),
    where: d.phase === 'queued' ? `Kueue LocalQueue ${d.queue ?? '?'}` : 'pod',
  };
}

function describe(run: Run): [string, string][] {
  const d = details(run);
  const lines: [string, string][] = [];
  if (typeof d.job === 'string') lines.push(['job', `${d.namespace ?? '?'}/${d.job} (context ${d.context ?? '?'})`]);
  const attempts = Array.isArray(d.attempts) ? d.attempts : [];
  if (attempts.length > 0) lines.push(['attempts', attempts.map((a, i) => `#${i + 1} ended ${a.endedAt ?? ''} (${a.reason ?? 'evicted'})`).join('; ')]);
  return lines;
}

const traits = { container: true, remote: true, outputNeedsSupervisor: true, clusterScheduled: true } as const;
const KUBERNETES_BACKENDS = ['k8s', 'kueue'];

/** The command as a batch/v1 Job on a Kubernetes cluster. */
export const k8s: BackendDescriptor = {
  name: 'k8s',
  summary: 'a Job on a Kubernetes cluster',
  traits,
  flags: clusterFlags,
  optionKeys: ['context', 'namespace', 'sync'],
  configSchema,
  resolveJob: (input) => resolveClusterJob('k8s', input, false),
  detect: async () => (await import('./kubeconfig-contexts.js')).detectCluster(false),
  sendsWorkspace,
  place,
  waiting,
  describe,
  // One check covers the clusters of both Kubernetes backends: a namespace is not reported twice.
  findOrphans: async (context) => (await import('./orphans.js')).findOrphanJobs(context, KUBERNETES_BACKENDS),
  load: async () => {
    const [{ KubernetesBackend }, { directAdmission }] = await Promise.all([import('./backend.js'), import('./admission.js')]);
    return new KubernetesBackend('k8s', directAdmission);
  },
};

/** The same Job, admitted by a Kueue LocalQueue (Kueue as the Kubernetes backend's admission strategy). */
export const kueue: BackendDescriptor = {
  name: 'kueue',
  summary: 'a Job on a Kubernetes cluster, admitted by a Kueue queue',
  traits,
  flags: [...clusterFlags, { flags: '--queue <name>', description: 'the Kueue LocalQueue of a queued Kubernetes run', key: 'queue' }],
  optionKeys: ['context', 'namespace', 'sync', 'queue'],
  configSchema,
  resolveJob: (input) => resolveClusterJob('kueue', input, true),
  detect: async () => (await import('./kubeconfig-contexts.js')).detectCluster(true),
  sendsWorkspace,
  place,
  waiting,
  describe,
  load: async () => {
    const [{ KubernetesBackend }, { kueueAdmission }] = await Promise.all([import('./backend.js'), import('./kueue.js')]);
    return new KubernetesBackend('kueue', kueueAdmission);
  },
};
