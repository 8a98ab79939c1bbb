import type * as k8s from '@kubernetes/client-node';
import type { Cluster } from './cluster.js';
import { LABEL_RUN_ID } from './manifest.js';

/** Before restarting a dropped watch. */
const RETRY_MS = 1000;

type Cache<T extends k8s.KubernetesObject> = k8s.Informer<T> & k8s.ObjectCache<T>;

/**
 * Observes one run's Job and pods with informers (the client library's
 * list-then-watch caches), by the run-id label: a list, then a watch from
 * the list's resourceVersion; a dropped watch resumes from the last
 * resourceVersion seen, and a 410 Gone lists again (the library does both
 * when restarted). Every change calls `onChange`; `snapshot` is what is
 * known now, once both lists have arrived.
 */
export class JobWatch {
  private readonly jobs: Cache<k8s.V1Job>;
  private readonly pods: Cache<k8s.V1Pod>;
  private readonly listed = { jobs: false, pods: false };
  private stopped = false;

  constructor(
    private readonly cluster: Cluster,
    runId: string,
    private readonly onChange: () => void,
  ) {
    const c = cluster;
    const selector = `${LABEL_RUN_ID}=${runId}`;
    this.jobs = this.informer<k8s.V1Job>(`/apis/batch/v1/namespaces/${c.namespace}/jobs`, () => c.batch.listNamespacedJob({ namespace: c.namespace, labelSelector: selector }), 'jobs', selector);
    this.pods = this.informer<k8s.V1Pod>(`/api/v1/namespaces/${c.namespace}/pods`, () => c.core.listNamespacedPod({ namespace: c.namespace, labelSelector: selector }), 'pods', selector);
  }

  /** The Job (undefined once deleted) and its pods, or undefined until both have been listed. */
  snapshot(jobName: string, jobUid: string | undefined): { job: k8s.V1Job | undefined; pods: k8s.V1Pod[] } | undefined {
    if (!this.listed.jobs || !this.listed.pods) return undefined;
    const ns = this.cluster.namespace;
    return { job: this.jobs.get(jobName, ns), pods: this.podsOf(jobUid) };
  }

  /** The Job's pods in the cache (those of this Job's uid: an earlier Job of the same name is not this run's). */
  podsOf(jobUid: string | undefined): k8s.V1Pod[] {
    return this.pods.list(this.cluster.namespace).filter((p) => !jobUid || p.metadata?.ownerReferences?.some((o) => o.uid === jobUid));
  }

  pod(name: string): k8s.V1Pod | undefined {
    return this.pods.get(name, this.cluster.namespace);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    void this.jobs.stop();
    void this.pods.stop();
  }

  private informer<T extends k8s.KubernetesObject>(path: string, list: () => Promise<k8s.KubernetesListObject<T>>, which: 'jobs' | 'pods', selector: string): Cache<T> {
    const c = this.cluster;
    const inf = c.lib.makeInformer<T>(c.config, path, async () => {
      const l = await list();
      this.listed[which] = true;
      return l;
    }, selector);
    for (const verb of ['add', 'update', 'delete'] as const) inf.on(verb, () => this.onChange());
    // A dropped watch or a failed list ('error'), or a watch that could not be opened (start() rejects then, with no
    // 'error'): start again from the last resourceVersion seen (start() relists on 410 Gone). One restart at a time.
    let restarting = false;
    const restart = (): void => {
      if (this.stopped || restarting) return;
      restarting = true;
      setTimeout(() => {
        restarting = false;
        if (!this.stopped) inf.start().catch(restart);
      }, RETRY_MS).unref();
    };
    inf.on('error', restart);
    inf.start().catch(restart);
    return inf;
  }
}
