/**
 * The FAKE API server's Job controller: a Job that is neither suspended nor
 * finished has one pod; a suspended one has none; a pod's end completes or
 * fails the Job (Complete / Failed conditions, backoffLimit retries);
 * deleting a Job with propagation deletes its pods. Kueue (kueue.ts) is
 * told of Jobs created with its queue label, deleted and finished.
 */
import { randomUUID } from 'node:crypto';
import type { FakeKubelet } from './kubelet.js';
import type { FakeKueue } from './kueue.js';
import { setCondition, type Obj, type ObjectStore } from './store.js';

/** An answer for the HTTP layer: a status code and a body (or a Status failure). */
export type Answer = { code: number; body: Obj } | { code: number; reason: string; message: string; details?: Obj };

export class FakeJobController {
  kueue!: FakeKueue;
  kubelet!: FakeKubelet;

  constructor(private readonly store: ObjectStore) {}

  create(ns: string, job: Obj): Answer {
    const name = job.metadata?.name as string | undefined;
    if (!name || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 63) {
      return { code: 422, reason: 'Invalid', message: `Job.batch "${name}" is invalid: metadata.name: Invalid value: "${name}": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'` };
    }
    if (this.store.get('jobs', ns, name)) return { code: 409, reason: 'AlreadyExists', message: `jobs.batch "${name}" already exists`, details: { name, group: 'batch', kind: 'jobs' } };
    const labels = (job.spec?.template?.metadata?.labels ?? {}) as Record<string, string>;
    job.metadata = { ...job.metadata, namespace: ns, uid: randomUUID(), creationTimestamp: new Date().toISOString() };
    job.spec.template.metadata = { ...job.spec.template.metadata, labels: { ...labels, 'batch.kubernetes.io/controller-uid': job.metadata.uid, 'batch.kubernetes.io/job-name': name, 'job-name': name } };
    job.spec.selector = { matchLabels: { 'batch.kubernetes.io/controller-uid': job.metadata.uid } };
    job.status = {};
    this.store.put('jobs', job);
    const queue = job.metadata.labels?.['kueue.x-k8s.io/queue-name'] as string | undefined;
    if (queue !== undefined) this.kueue.createWorkload(job, queue);
    this.jobChanged(job);
    return { code: 201, body: job };
  }

  patch(job: Obj, contentType: string, patch: unknown): void {
    if (contentType.includes('json-patch')) {
      for (const op of patch as { op: string; path: string; value: unknown }[]) {
        if (op.path === '/spec/suspend' && (op.op === 'replace' || op.op === 'add')) job.spec.suspend = op.value;
      }
    } else if ((patch as Obj).spec?.suspend !== undefined) {
      job.spec.suspend = (patch as Obj).spec.suspend;
    }
    this.store.touch('jobs', job);
    this.jobChanged(job);
  }

  delete(job: Obj, propagation: string, grace?: number): void {
    this.store.remove('jobs', job);
    if (propagation !== 'Orphan') for (const pod of this.podsOf(job)) void this.kubelet.deletePod(pod, grace);
    this.kueue.jobDeleted(job);
  }

  /** A Job that is not suspended and not finished has one pod; a suspended one has none. */
  jobChanged(job: Obj): void {
    if (!this.store.get('jobs', job.metadata.namespace, job.metadata.name)) return;
    const pods = this.podsOf(job);
    const finished = (job.status.conditions ?? []).some((c: Obj) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
    if (job.spec.suspend) {
      for (const pod of pods) void this.kubelet.deletePod(pod);
      if (job.status.active) job.status.active = 0;
      setCondition(job.status, { type: 'Suspended', status: 'True', reason: 'JobSuspended', message: 'Job suspended' });
      this.store.touch('jobs', job);
      return;
    }
    if (job.status.conditions?.some((c: Obj) => c.type === 'Suspended' && c.status === 'True')) {
      setCondition(job.status, { type: 'Suspended', status: 'False', reason: 'JobResumed', message: 'Job resumed' });
      this.store.touch('jobs', job);
    }
    const active = pods.filter((p) => !p.metadata.deletionTimestamp && p.status.phase !== 'Succeeded' && p.status.phase !== 'Failed');
    if (!finished && active.length === 0) void this.kubelet.createPod(job);
  }

  podEnded(pod: Obj, phase: 'Succeeded' | 'Failed'): void {
    if (!this.kubelet.live(pod)) return;
    pod.status.phase = phase;
    this.store.touch('pods', pod);
    if (pod.metadata.deletionTimestamp) return; // a deleted pod (suspended or deleted Job) is no failure of the Job
    const owner = pod.metadata.ownerReferences[0];
    const job = this.store.get('jobs', pod.metadata.namespace, owner.name);
    if (!job || job.metadata.uid !== owner.uid) return;
    job.status.active = 0;
    const now = new Date().toISOString();
    if (phase === 'Succeeded') {
      job.status.succeeded = 1;
      job.status.completionTime = now;
      setCondition(job.status, { type: 'SuccessCriteriaMet', status: 'True', reason: 'CompletionsReached', message: 'Reached expected number of succeeded pods' });
      setCondition(job.status, { type: 'Complete', status: 'True', reason: 'CompletionsReached', message: 'Reached expected number of succeeded pods' });
    } else {
      job.status.failed = (job.status.failed ?? 0) + 1;
      if (job.status.failed <= (job.spec.backoffLimit ?? 6)) {
        // Retries left: the Job controller starts another pod.
        this.store.touch('jobs', job);
        this.jobChanged(job);
        return;
      }
      setCondition(job.status, { type: 'FailureTarget', status: 'True', reason: 'BackoffLimitExceeded', message: 'Job has reached the specified backoff limit' });
      setCondition(job.status, { type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded', message: 'Job has reached the specified backoff limit' });
    }
    this.store.touch('jobs', job);
    this.kueue.jobFinished(job, phase === 'Succeeded');
  }

  private podsOf(job: Obj): Obj[] {
    return this.store.all('pods').filter((o) => o.metadata.ownerReferences?.[0]?.uid === job.metadata.uid);
  }
}
