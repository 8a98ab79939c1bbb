import type { Job } from '../../run/model.js';
import type { Cluster } from './cluster.js';
import type { KubernetesOptions } from './manifest.js';

/** Where a suspended Job stands in the queue that admits it, as the decisions need it (decide.ts). */
export interface QueueView {
  reason: string;
  message?: string;
  /** 1-based place in the queue, where the queue says. */
  position?: number;
  /** The queue says it can never admit the Job as it is (Kueue's Inadmissible): a problem that fails the run once it lasts. */
  inadmissible?: boolean;
}

/**
 * How a Job of the Kubernetes backend gets to run: created to run at once
 * (`direct`, the k8s backend), or created suspended behind a queue that
 * admits it (kueue.ts, the kueue backend). The rest of the backend is the
 * same for both.
 */
export interface Admission {
  /** The backend's options as recorded with the job, checked (a queue backend needs its queue). */
  options(job: Job): KubernetesOptions;
  /** Checks before the Job is created (a missing LocalQueue fails the run before anything exists). */
  check(cluster: Cluster, options: KubernetesOptions): Promise<void>;
  /** A look at where a suspended Job stands; undefined when this admission has no queue to look at. */
  observe(cluster: Cluster, jobUid: string, options: KubernetesOptions): Promise<QueueView | undefined>;
  /** Why a Job that ran was suspended again (an eviction, a preemption), when the queue says. */
  eviction(cluster: Cluster, jobUid: string): Promise<{ reason: string; message?: string } | undefined>;
}

/** The k8s backend: the Job runs as soon as the cluster schedules it. */
export const directAdmission: Admission = {
  options: (job) => {
    const { queue: _queue, ...rest } = job.backendOptions as KubernetesOptions;
    return rest;
  },
  check: () => Promise.resolve(),
  observe: () => Promise.resolve(undefined),
  eviction: () => Promise.resolve(undefined),
};
