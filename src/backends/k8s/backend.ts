import type * as k8s from '@kubernetes/client-node';
import { ErrorCode, QwexError } from '../../errors.js';
import { runProgress } from '../../progress.js';
import { readRunRecord } from '../../store/run-record.js';
import type { Job } from '../../run/model.js';
import { untilAborted } from '../abort.js';
import { notStartedProcess, type Backend, type RunIO, type StartedProcess } from '../types.js';
import type { Admission } from './admission.js';
import { clusterError, connectCluster, statusOf, type Cluster } from './cluster.js';
import { followJob } from './follow-job.js';
import { LABEL_RUN_ID, jobManifest, jobName } from './manifest.js';

/**
 * Runs the command as a batch/v1 Job on a Kubernetes cluster (manifest.ts
 * says what the pod is), admitted as its Admission says: at once (k8s) or
 * by a Kueue LocalQueue (kueue.ts). The API server is the daemon of record:
 * the Job runs on if qwex goes away, and `adopt` finds it again by name, as
 * does a second `start` of the same run (the Job's name is derived from the
 * run id: AlreadyExists means an earlier start made it, and it is adopted).
 * Whoever supervises the run follows the Job (follow-job.ts).
 */
export class KubernetesBackend implements Backend {
  constructor(
    readonly name: string,
    private readonly admission: Admission,
  ) {}

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const options = this.admission.options(job);
    const cluster = await untilAborted(connectCluster(options), io.signal);
    await untilAborted(checkNamespace(cluster), io.signal);
    await untilAborted(this.admission.check(cluster, options), io.signal);
    io.signal.throwIfAborted();
    const made = await createOrFind(cluster, jobManifest({ runId: io.runId, project: io.project, job, cwd: job.workspace?.cwd ?? '', options }), io.runId);
    if (io.signal.aborted) {
      // Cancelled while it started: the Job goes (with its pods), and the run is recorded as never started.
      await cluster.batch.deleteNamespacedJob({ name: jobName(io.runId), namespace: cluster.namespace, propagationPolicy: 'Background', gracePeriodSeconds: 0 }).catch(() => {
        // the API is away: `qwex doctor` lists what is left
      });
      io.signal.throwIfAborted();
    }
    const details = {
      context: cluster.context,
      namespace: cluster.namespace,
      job: made.metadata?.name ?? jobName(io.runId),
      jobUid: made.metadata?.uid,
      ...(options.queue === undefined ? {} : { queue: options.queue, phase: 'queued' }),
    };
    return followJob({ getCluster: () => Promise.resolve(cluster), details, runDir: io.dir, runId: io.runId, job, options, admission: this.admission, ...(io.progress ? { progress: io.progress } : {}) });
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    if (typeof details.job !== 'string' || typeof details.namespace !== 'string') {
      return notStartedProcess({ exitCode: null, signal: null, lost: 'its record names no Kubernetes Job' });
    }
    let job: Job;
    let runId: string;
    try {
      ({ job, id: runId } = readRunRecord(dir));
    } catch (error) {
      return notStartedProcess({ exitCode: null, signal: null, lost: `its record cannot be read: ${(error as Error).message}` });
    }
    const options = { ...this.admission.options(job), namespace: details.namespace, ...(typeof details.context === 'string' ? { context: details.context } : {}) };
    let cluster: Promise<Cluster> | undefined;
    const getCluster = (): Promise<Cluster> =>
      (cluster ??= connectCluster(options).catch((error: unknown) => {
        cluster = undefined;
        throw error;
      }));
    // The upload may still be to do (its first supervisor died before it): its progress goes where the run's is read.
    return followJob({ getCluster, details, runDir: dir, runId, job, options, admission: this.admission, progress: runProgress(dir) });
  }
}

/** Creates the run's Job, or finds the one an earlier start of the same run created (409 AlreadyExists). */
async function createOrFind(cluster: Cluster, body: Record<string, unknown>, runId: string): Promise<k8s.V1Job> {
  try {
    return await cluster.batch.createNamespacedJob({ namespace: cluster.namespace, body: body as k8s.V1Job });
  } catch (error) {
    if (statusOf(error) !== 409) throw clusterError(error, cluster, { verb: 'create', resource: 'jobs' });
  }
  let existing: k8s.V1Job;
  try {
    existing = await cluster.batch.readNamespacedJob({ name: jobName(runId), namespace: cluster.namespace });
  } catch (error) {
    throw clusterError(error, cluster, { verb: 'get', resource: 'jobs' });
  }
  if (existing.metadata?.labels?.[LABEL_RUN_ID] !== runId) {
    throw new QwexError(ErrorCode.BackendUnavailable, `a Job named ${jobName(runId)} that is not this run's exists in namespace ${cluster.namespace}`, {
      hint: `look at it (kubectl get job ${jobName(runId)} -n ${cluster.namespace}) and delete it if it is a leftover`,
    });
  }
  return existing;
}

async function checkNamespace(cluster: Cluster): Promise<void> {
  try {
    await cluster.core.readNamespace({ name: cluster.namespace });
  } catch (error) {
    if (statusOf(error) === 404) {
      throw new QwexError(ErrorCode.BackendUnavailable, `namespace ${cluster.namespace} does not exist in context ${cluster.context}`, {
        hint: `create it (kubectl create namespace ${cluster.namespace}), or pass --namespace`,
      });
    }
    // Many users may not read namespaces: that is no reason not to try creating the Job.
    if (statusOf(error) === 403) return;
    throw clusterError(error, cluster, { verb: 'get', resource: 'namespaces' });
  }
}
