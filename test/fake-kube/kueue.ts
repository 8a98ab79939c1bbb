/**
 * The FAKE API server's Kueue: LocalQueues, a Workload per queued Job,
 * admission in order while quota lasts (QuotaReserved / Admitted
 * conditions, and the Job unsuspended), Inadmissible queues, evictions
 * (the Job suspended again, Evicted condition), and the visibility API's
 * pending positions. No ClusterQueues, cohorts or flavors beyond a count.
 */
import { randomUUID } from 'node:crypto';
import { setCondition, type Obj, type ObjectStore } from './store.js';

export class FakeKueue {
  private quota: number;
  private readonly inadmissible = new Map<string, string>();

  constructor(
    private readonly store: ObjectStore,
    /** The Job controller's reaction to a Job whose suspension changed. */
    private readonly jobChanged: (job: Obj) => void,
    options: { localQueues?: string[]; quota?: number },
  ) {
    this.quota = options.quota ?? Infinity;
    for (const q of options.localQueues ?? []) {
      const [ns, name] = q.split('/') as [string, string];
      this.store.put('localqueues', { metadata: { namespace: ns, name }, spec: { clusterQueue: 'cluster-queue' }, status: {} });
    }
  }

  setQuota(n: number): void {
    this.quota = n;
    this.schedule();
  }

  /** A LocalQueue whose ClusterQueue cannot admit anything: its workloads get Kueue's Inadmissible condition. */
  addInadmissibleQueue(name: string, message: string, ns = 'default'): void {
    this.store.put('localqueues', { metadata: { namespace: ns, name }, spec: { clusterQueue: 'missing-cluster-queue' }, status: {} });
    this.inadmissible.set(`${ns}/${name}`, message);
  }

  createWorkload(job: Obj, queue: string): void {
    const ns = job.metadata.namespace;
    const wl: Obj = {
      metadata: { name: `job-${job.metadata.name}-${randomUUID().slice(0, 5)}`, namespace: ns, labels: { 'kueue.x-k8s.io/job-uid': job.metadata.uid }, ownerReferences: [{ kind: 'Job', name: job.metadata.name, uid: job.metadata.uid }], creationTimestamp: new Date().toISOString() },
      spec: { queueName: queue, podSets: [{ name: 'main', count: 1 }] },
      status: { conditions: [] },
    };
    if (!this.store.get('localqueues', ns, queue)) {
      wl.status.conditions = [{ type: 'QuotaReserved', status: 'False', reason: 'Inadmissible', message: `LocalQueue ${queue} doesn't exist`, lastTransitionTime: new Date().toISOString() }];
    }
    this.store.put('workloads', wl);
    this.schedule();
  }

  workloadOf(job: Obj): Obj | undefined {
    return this.store.all('workloads').find((o) => o.metadata.labels?.['kueue.x-k8s.io/job-uid'] === job.metadata.uid);
  }

  /** The Job is gone: so is its workload, and its quota is free. */
  jobDeleted(job: Obj): void {
    const wl = this.workloadOf(job);
    if (wl) this.store.remove('workloads', wl);
    this.schedule();
  }

  /** The Job finished: its workload is Finished and its quota free. */
  jobFinished(job: Obj, succeeded: boolean): void {
    const wl = this.workloadOf(job);
    if (!wl) return;
    setCondition(wl.status, { type: 'Finished', status: 'True', reason: succeeded ? 'Succeeded' : 'Failed', message: 'Job finished' });
    wl.__admitted = false;
    this.store.touch('workloads', wl);
    this.schedule();
  }

  /** Evicts (preempts) the admitted workload of a Job: the Job is suspended again, its pod goes, and it waits for quota again. */
  evict(job: Obj, reason: string): void {
    const wl = this.workloadOf(job);
    if (!wl) throw new Error(`no admitted workload for job ${job.metadata.name}`);
    const now = new Date().toISOString();
    wl.status.conditions = [
      { type: 'Evicted', status: 'True', reason, message: 'Preempted to accommodate a higher priority Workload', lastTransitionTime: now },
      { type: 'QuotaReserved', status: 'False', reason: 'Pending', message: 'couldn\'t assign flavors to pod set main: insufficient unused quota', lastTransitionTime: now },
      { type: 'Admitted', status: 'False', reason: 'NoReservation', message: 'The workload has no reservation', lastTransitionTime: now },
    ];
    wl.__admitted = false;
    wl.__evictedUntil = Date.now() + 1500;
    this.store.touch('workloads', wl);
    job.spec.suspend = true;
    this.store.touch('jobs', job);
    this.jobChanged(job);
    setTimeout(() => this.schedule(), 1600).unref();
  }

  /** The visibility API's pendingworkloads of a LocalQueue. */
  pendingIn(ns: string, queue: string): Obj {
    const pending = this.pending().filter((w) => w.spec.queueName === queue && w.metadata.namespace === ns);
    return {
      kind: 'PendingWorkloadsSummary',
      apiVersion: 'visibility.kueue.x-k8s.io/v1beta1',
      items: pending.map((w, i) => ({ metadata: { name: w.metadata.name, namespace: w.metadata.namespace }, localQueueName: queue, positionInLocalQueue: i, positionInClusterQueue: i, priority: 0 })),
    };
  }

  private pending(): Obj[] {
    return this.store
      .all('workloads')
      .filter((o) => !o.__admitted && !o.status.conditions.some((c: Obj) => c.type === 'Finished') && this.store.get('localqueues', o.metadata.namespace, o.spec.queueName))
      .sort((a, b) => a.__rv0 - b.__rv0);
  }

  /** Admits pending workloads in order while quota lasts, and unsuspends their Jobs. */
  schedule(): void {
    let admitted = this.store.all('workloads').filter((o) => o.__admitted).length;
    const now = new Date().toISOString();
    for (const wl of this.pending()) {
      if (wl.__evictedUntil && Date.now() < wl.__evictedUntil) continue;
      const why = this.inadmissible.get(`${wl.metadata.namespace}/${wl.spec.queueName}`);
      if (why !== undefined) {
        if (!wl.status.conditions.some((c: Obj) => c.reason === 'Inadmissible')) {
          setCondition(wl.status, { type: 'QuotaReserved', status: 'False', reason: 'Inadmissible', message: why, lastTransitionTime: now });
          this.store.touch('workloads', wl);
        }
        continue;
      }
      if (admitted >= this.quota) {
        if (!wl.status.conditions.some((c: Obj) => c.type === 'QuotaReserved')) {
          setCondition(wl.status, { type: 'QuotaReserved', status: 'False', reason: 'Pending', message: 'couldn\'t assign flavors to pod set main: insufficient unused quota for cpu in flavor default-flavor, 1 more needed', lastTransitionTime: now });
          this.store.touch('workloads', wl);
        }
        continue;
      }
      admitted++;
      wl.__admitted = true;
      wl.status.conditions = wl.status.conditions.filter((c: Obj) => c.type !== 'Evicted');
      setCondition(wl.status, { type: 'QuotaReserved', status: 'True', reason: 'QuotaReserved', message: 'Quota reserved in ClusterQueue cluster-queue', lastTransitionTime: now });
      setCondition(wl.status, { type: 'Admitted', status: 'True', reason: 'Admitted', message: 'The workload is admitted', lastTransitionTime: now });
      this.store.touch('workloads', wl);
      const owner = wl.metadata.ownerReferences[0];
      const job = this.store.get('jobs', wl.metadata.namespace, owner.name);
      if (job && job.spec.suspend) {
        job.spec.suspend = false;
        this.store.touch('jobs', job);
        this.jobChanged(job);
      }
    }
  }
}
