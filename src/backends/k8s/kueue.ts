import { ErrorCode, QwexError } from '../../errors.js';
import type { Job } from '../../run/model.js';
import type { Admission, QueueView } from './admission.js';
import { apiMessage, clusterError, statusOf, type Cluster } from './cluster.js';
import { apiGetJson } from './http.js';
import type { KubernetesOptions } from './manifest.js';

const KUEUE_GROUP = 'kueue.x-k8s.io';
const KUEUE_VERSION = 'v1beta1';

interface Workload {
  metadata?: { name?: string };
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}

/**
 * Kueue as the Kubernetes backend's admission strategy (the kueue backend):
 * the same Job, created suspended by qwex itself with the
 * `kueue.x-k8s.io/queue-name` label (manifest.ts), so that it runs only
 * once Kueue admits it, whether or not Kueue's webhook would have suspended
 * it. While it waits, the run's record says why (the Workload's conditions)
 * and where it stands in the LocalQueue (the visibility API, where Kueue
 * serves it); an eviction is recorded as an attempt and the run waits again.
 */
export const kueueAdmission: Admission = {
  options: (job: Job): KubernetesOptions => {
    const options = job.backendOptions as KubernetesOptions;
    if (!options.queue) {
      throw new QwexError(ErrorCode.Usage, 'no queue given for a kueue run', { hint: 'pass --queue NAME (a LocalQueue), or set backends.kueue.queue in qwex.yaml' });
    }
    return options;
  },
  check: (cluster, options) => checkLocalQueue(cluster, options.queue!),
  observe: (cluster, jobUid, options) => observeQueue(cluster, jobUid, options.queue!),
  eviction: async (cluster, jobUid) => {
    const wl = await workload(cluster, jobUid);
    const evicted = wl && condition(wl, 'Evicted');
    return evicted ? { reason: evicted.reason ?? 'Evicted', ...(evicted.message ? { message: evicted.message } : {}) } : undefined;
  },
};

/**
 * A missing LocalQueue fails the run before anything is created. A cluster
 * without Kueue's API at all is allowed (something else may admit suspended
 * Jobs): the record says so while the Job waits.
 */
async function checkLocalQueue(cluster: Cluster, queue: string): Promise<void> {
  try {
    await cluster.custom.getNamespacedCustomObject({ group: KUEUE_GROUP, version: KUEUE_VERSION, namespace: cluster.namespace, plural: 'localqueues', name: queue });
  } catch (error) {
    if (statusOf(error) === 404) {
      if (noKueueApi(error)) return;
      throw new QwexError(ErrorCode.BackendUnavailable, `LocalQueue ${queue} does not exist in namespace ${cluster.namespace}`, {
        hint: `ask for one (kubectl get localqueues -n ${cluster.namespace} lists those there), or pass --queue NAME`,
      });
    }
    if (statusOf(error) === 403) return; // may not read LocalQueues: Kueue itself will say if it is missing
    throw clusterError(error, cluster, { verb: 'get', resource: 'localqueues' });
  }
}

/** Where the Job's Workload stands: its QuotaReserved (or Evicted) condition, and its place in the LocalQueue. */
async function observeQueue(cluster: Cluster, jobUid: string, queue: string): Promise<QueueView> {
  let wl: Workload | undefined;
  try {
    wl = await workload(cluster, jobUid);
  } catch (error) {
    if (noKueueApi(error)) return { reason: 'NoKueue', message: 'Kueue is not installed in this cluster: the Job stays suspended until something admits it' };
    throw error;
  }
  if (!wl) return { reason: 'NoWorkload', message: 'waiting for Kueue to create the Workload' };
  const reserved = condition(wl, 'QuotaReserved');
  const evicted = condition(wl, 'Evicted');
  let position: number | undefined;
  try {
    const pending = await apiGetJson<{ items?: { metadata?: { name?: string }; positionInLocalQueue?: number }[] }>(cluster, `/apis/visibility.kueue.x-k8s.io/${KUEUE_VERSION}/namespaces/${cluster.namespace}/localqueues/${queue}/pendingworkloads`);
    const mine = pending.items?.find((i) => i.metadata?.name === wl.metadata?.name);
    if (mine?.positionInLocalQueue !== undefined) position = mine.positionInLocalQueue + 1;
  } catch {
    // the visibility API is optional in Kueue: no position then
  }
  const why = evicted?.status === 'True' ? evicted : reserved;
  return {
    reason: why?.reason ?? 'Pending',
    ...(why?.message ? { message: why.message } : {}),
    ...(position === undefined ? {} : { position }),
    ...(reserved?.status === 'False' && reserved.reason === 'Inadmissible' ? { inadmissible: true } : {}),
  };
}

/** The API server answers 404 with this when a whole resource type (here Kueue's CRDs) is not installed. */
function noKueueApi(error: unknown): boolean {
  return statusOf(error) === 404 && /could not find the requested resource|404 page not found/i.test(apiMessage(error) ?? '');
}

async function workload(cluster: Cluster, jobUid: string): Promise<Workload | undefined> {
  const list = (await cluster.custom.listNamespacedCustomObject({ group: KUEUE_GROUP, version: KUEUE_VERSION, namespace: cluster.namespace, plural: 'workloads', labelSelector: `${KUEUE_GROUP}/job-uid=${jobUid}` })) as { items?: Workload[] };
  return list.items?.[0];
}

function condition(wl: Workload, type: string): { status: string; reason?: string; message?: string } | undefined {
  return wl.status?.conditions?.find((c) => c.type === type);
}
