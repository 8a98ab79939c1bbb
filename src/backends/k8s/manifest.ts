import { executable } from '../../config/command.js';
import type { ContainerConfig, PullPolicy, ResourceRequirements } from '../../config/container.js';
import { ErrorCode, QwexError } from '../../errors.js';
import type { Job } from '../../run/model.js';

/**
 * The batch/v1 Job that carries one qwex run, built from the run's Job alone
 * (pure: tested without a cluster). One pod, never restarted:
 *   - init container `qwex-sync` (the user's image, `sh`): waits until qwex
 *     has streamed the workspace snapshot into the `workspace` emptyDir over
 *     the exec API, then hands over. Left out with `sync: false`.
 *   - container `main`: the user's command as argv (the image's entrypoint
 *     is kept, as with `docker run`), in /workspace/<cwd>.
 *   - container `qwex-keeper` (the user's image, `sh`): keeps the pod, and so
 *     the `workspace` volume, alive after `main` exits until qwex has copied
 *     `out/` back, or until its lease (renewed by qwex while it watches) runs
 *     out: a run nobody collects never holds the pod forever. A cancel
 *     signals the command through it (keeper.ts), so that what the command
 *     writes as it stops comes home too.
 * The pod shares one process namespace (`shareProcessNamespace`): PID 1 is
 * the pause container, so the command gets SIGTERM as it would under an
 * init, and nothing of qwex is put into the user's image.
 */

export const LABEL_RUN_ID = 'qwex.dev/run-id';
export const ANNOTATION_PROJECT = 'qwex.dev/project';
export const LABEL_QUEUE = 'kueue.x-k8s.io/queue-name';
export const MAIN_CONTAINER = 'main';
export const SYNC_CONTAINER = 'qwex-sync';
export const KEEPER_CONTAINER = 'qwex-keeper';
export const WORKSPACE_MOUNT = '/workspace';
export const CONTROL_MOUNT = '/qwex';

/** backends.k8s / backends.kueue in qwex.yaml (and their flags). */
export interface KubernetesOptions {
  context?: string;
  /** The kubeconfig file to use instead of $KUBECONFIG (a qwexcloud target names its own). */
  kubeconfig?: string;
  namespace?: string;
  /** The Kueue LocalQueue (kueue backend). */
  queue?: string;
  /** false: run the image as it is, without sending the workspace (the code is baked in). */
  sync?: boolean;
  /** backoffLimit: how many times Kubernetes may retry a failed pod (default 0). */
  retries?: number;
  ttl_seconds_after_finished?: number;
  /** How long a pod may wait on an image pull failure, an unschedulable pod or an inadmissible workload before the run fails. */
  pending_timeout_seconds?: number;
  /** How long the pod waits for qwex to collect out/ once nobody renews its lease. */
  artifact_timeout_seconds?: number;
  /** Keep the Job after the run is recorded (default: qwex deletes it, as it removes Docker containers). */
  keep_jobs?: boolean;
}

export const DEFAULT_PENDING_TIMEOUT_S = 300;
export const DEFAULT_ARTIFACT_TIMEOUT_S = 600;

/** The Job's name, derived from the run id so that it can be found from the record alone. */
export function jobName(runId: string): string {
  return `qwex-${runId.toLowerCase()}`;
}

const PULL: Record<PullPolicy, string> = { never: 'Never', missing: 'IfNotPresent', always: 'Always' };

export interface ManifestInput {
  runId: string;
  project: string;
  job: Job;
  /** The working directory relative to the workspace root ('' for the root). */
  cwd: string;
  options: KubernetesOptions;
}

export function jobManifest({ runId, project, job, cwd, options }: ManifestInput): Record<string, unknown> {
  const config = job.container;
  if (!config) throw new QwexError(ErrorCode.Internal, `a ${job.backend} run was recorded without its container settings`);
  const sync = options.sync !== false;
  const { file, args } = executable(job);
  const image = config.image;
  const pull = PULL[config.pull];
  const mounts = [{ name: 'workspace', mountPath: WORKSPACE_MOUNT }];
  const control = [...mounts, { name: 'qwex', mountPath: CONTROL_MOUNT }];
  const helper = { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } };
  const labels = { [LABEL_RUN_ID]: runId };
  const leaseSeconds = options.artifact_timeout_seconds ?? DEFAULT_ARTIFACT_TIMEOUT_S;
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: jobName(runId),
      labels: { ...labels, ...(options.queue ? { [LABEL_QUEUE]: options.queue } : {}) },
      annotations: { [ANNOTATION_PROJECT]: project },
    },
    spec: {
      backoffLimit: options.retries ?? 0,
      // Kueue's own webhook would suspend it too; qwex does not depend on that.
      ...(options.queue ? { suspend: true } : {}),
      ...(options.ttl_seconds_after_finished === undefined ? {} : { ttlSecondsAfterFinished: options.ttl_seconds_after_finished }),
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          // The pause container is PID 1, not the command: a command without a SIGTERM handler is not
          // deaf to SIGTERM as a PID 1 is, and the keeper can see (and signal) the command's processes.
          shareProcessNamespace: true,
          terminationGracePeriodSeconds: Math.max(1, Math.ceil(job.killGraceMs / 1000)),
          ...securityContext(config),
          ...(sync
            ? {
                initContainers: [
                  {
                    name: SYNC_CONTAINER,
                    image,
                    imagePullPolicy: pull,
                    command: ['sh', '-c', `until [ -e ${CONTROL_MOUNT}/synced ]; do sleep 0.2; done`],
                    volumeMounts: control,
                    resources: helper,
                  },
                ],
              }
            : {}),
          containers: [
            {
              name: MAIN_CONTAINER,
              image,
              imagePullPolicy: pull,
              args: [file, ...args],
              env: Object.entries(containerEnv(job, runId, config)).map(([name, value]) => ({ name, value })),
              ...(sync ? { workingDir: cwd ? `${WORKSPACE_MOUNT}/${cwd}` : WORKSPACE_MOUNT, volumeMounts: mounts } : {}),
              resources: resources(config.resources),
            },
            ...(sync
              ? [
                  {
                    name: KEEPER_CONTAINER,
                    image,
                    imagePullPolicy: pull,
                    command: ['sh', '-c', keeperScript(leaseSeconds)],
                    volumeMounts: control,
                    resources: helper,
                  },
                ]
              : []),
          ],
          volumes: sync ? [{ name: 'workspace', emptyDir: {} }, { name: 'qwex', emptyDir: {} }] : [],
        },
      },
    },
  };
}

/**
 * Waits until qwex says it has collected the artifacts, or until the lease
 * qwex renews while it watches is older than `seconds`. Exits 0 either way,
 * so the pod's phase is the main container's.
 */
function keeperScript(seconds: number): string {
  return [
    `touch ${CONTROL_MOUNT}/lease`,
    `while [ ! -e ${CONTROL_MOUNT}/collected ]; do`,
    `  now=$(date +%s); lease=$(stat -c %Y ${CONTROL_MOUNT}/lease 2>/dev/null || echo "$now")`,
    `  [ $((now - lease)) -gt ${Math.max(1, Math.floor(seconds))} ] && exit 0`,
    '  sleep 1',
    'done',
  ].join('\n');
}

function containerEnv(job: Job, runId: string, config: ContainerConfig): Record<string, string> {
  return { ...config.env, ...job.env, PYTHONUNBUFFERED: job.env.PYTHONUNBUFFERED ?? config.env.PYTHONUNBUFFERED ?? '1', QWEX_RUN_ID: runId };
}

/** Kubernetes takes numeric ids only: a user name must be the image's own USER instead. */
function securityContext(config: ContainerConfig): Record<string, unknown> {
  if (config.user === undefined) return {};
  const [uid, gid] = config.user.split(':');
  if (!/^\d+$/.test(uid ?? '') || (gid !== undefined && !/^\d+$/.test(gid))) {
    throw new QwexError(ErrorCode.Usage, `--user "${config.user}": Kubernetes runs containers as a numeric uid[:gid]`, { hint: 'e.g. --user 1000:1000, or set USER in the image' });
  }
  return { securityContext: { runAsUser: Number(uid), ...(gid === undefined ? {} : { runAsGroup: Number(gid) }) } };
}

/** The portable requirements as Kubernetes quantities: the limit is also the request, so the pod is placed where it fits. */
export function resources(r: ResourceRequirements): Record<string, Record<string, string>> {
  const limits: Record<string, string> = {};
  if (r.cpus !== undefined) limits.cpu = `${Math.round(r.cpus * 1000)}m`;
  if (r.memoryBytes !== undefined) limits.memory = String(r.memoryBytes);
  if (r.gpus !== undefined) {
    if (typeof r.gpus !== 'number') {
      throw new QwexError(ErrorCode.Usage, `--gpus ${Array.isArray(r.gpus) ? `device=${r.gpus.join(',')}` : r.gpus}: Kubernetes requests GPUs by count`, { hint: 'e.g. --gpus 1 (nvidia.com/gpu)' });
    }
    limits['nvidia.com/gpu'] = String(r.gpus);
  }
  return Object.keys(limits).length === 0 ? {} : { limits, requests: { ...limits } };
}
