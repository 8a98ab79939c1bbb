/**
 * A FAKE Kubernetes API server, for CI where no real cluster can be had.
 *
 * It implements only the endpoints qwex's k8s and kueue backends use, over
 * real HTTP on 127.0.0.1 (the backend talks to it with
 * @kubernetes/client-node, exactly as to a real API server), and keeps the
 * API's semantics where qwex depends on them. In parts, as a cluster is:
 *   store.ts           objects, one resourceVersion counter, watch history and 410 Gone
 *   http.ts            the HTTP/WebSocket API: routes, RBAC, Status bodies
 *   job-controller.ts  Jobs: pods, conditions, retries, propagation
 *   kubelet.ts         the node: pods as real containers on the Docker engine, logs, exec
 *   kueue.ts           Kueue: LocalQueues, Workloads, admission, evictions, visibility
 * This file puts them together and holds the controls tests use.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { FakeKubeHttp } from './http.js';
import { FakeJobController } from './job-controller.js';
import { FakeKubelet } from './kubelet.js';
import { FakeKueue } from './kueue.js';
import { ObjectStore, type Obj } from './store.js';

export interface FakeKubeOptions {
  namespaces?: string[];
  /** Bearer token every request must carry. */
  token?: string;
  /** LocalQueues that exist (namespace/name). */
  localQueues?: string[];
  /** How many Kueue workloads may be admitted at once (default: unlimited). */
  kueueQuota?: number;
  /** Watch events kept for resuming; an older resourceVersion gets 410 Gone. */
  historyLimit?: number;
}

export class FakeKubeApi {
  readonly token: string;
  /** Requests seen, for tests that check what the client asked (method and path with query). */
  readonly requests: string[] = [];
  private readonly store: ObjectStore;
  private readonly jobs: FakeJobController;
  private readonly kubelet: FakeKubelet;
  private readonly kueue: FakeKueue;
  private readonly http: FakeKubeHttp;
  private readonly forbidden = new Set<string>();
  private readonly volumes: string;

  constructor(options: FakeKubeOptions = {}) {
    this.token = options.token ?? `fake-token-${randomUUID()}`;
    this.volumes = mkdtempSync(join(tmpdir(), 'qwex-fake-kube-'));
    this.store = new ObjectStore(options.historyLimit);
    this.jobs = new FakeJobController(this.store);
    this.kubelet = new FakeKubelet(this.store, new Docker(), this.volumes, (pod, phase) => this.jobs.podEnded(pod, phase));
    this.kueue = new FakeKueue(this.store, (job) => this.jobs.jobChanged(job), { ...(options.localQueues ? { localQueues: options.localQueues } : {}), ...(options.kueueQuota === undefined ? {} : { quota: options.kueueQuota }) });
    this.jobs.kubelet = this.kubelet;
    this.jobs.kueue = this.kueue;
    this.http = new FakeKubeHttp({
      store: this.store,
      jobs: this.jobs,
      kubelet: this.kubelet,
      kueue: this.kueue,
      token: this.token,
      namespaces: new Set(options.namespaces ?? ['default']),
      forbidden: this.forbidden,
      requests: this.requests,
    });
  }

  get url(): string {
    return this.http.url;
  }

  async start(): Promise<this> {
    await this.http.start();
    return this;
  }

  /** A kubeconfig for this server (user token, a context named `fake`). */
  writeKubeconfig(path: string, namespace = 'default'): void {
    writeFileSync(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: fake',
        '  cluster:',
        `    server: ${this.url}`,
        '    insecure-skip-tls-verify: true',
        'users:',
        '- name: fake-user',
        '  user:',
        `    token: ${this.token}`,
        'contexts:',
        '- name: fake',
        '  context:',
        '    cluster: fake',
        '    user: fake-user',
        `    namespace: ${namespace}`,
        'current-context: fake',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
  }

  async close(): Promise<void> {
    this.kubelet.closed = true;
    this.store.endWatches();
    for (const s of this.kubelet.streams) s.destroy();
    await this.http.close();
    await this.kubelet.removeAll();
    rmSync(this.volumes, { recursive: true, force: true });
  }

  // ---- controls for tests ----

  /** Refuses a verb on a resource with 403, as RBAC would. */
  forbid(verb: string, plural: string): void {
    this.forbidden.add(`${verb} ${plural}`);
  }

  allow(verb: string, plural: string): void {
    this.forbidden.delete(`${verb} ${plural}`);
  }

  /** Cuts every open watch, log stream and exec: what a dropped connection or an API server restart does. */
  dropStreams(): void {
    this.store.endWatches();
    for (const s of this.kubelet.streams) s.destroy();
    this.http.dropExecs();
  }

  /** While on, the API server is down: every connection is cut (watches, log streams and execs too), and each new one. */
  outage(on: boolean): void {
    if (on) this.store.endWatches();
    this.http.setDown(on);
  }

  /** While on, exec sessions are accepted and never run (a node that stops answering); off cuts those held. */
  stallExecs(on: boolean): void {
    this.http.stallExecs = on;
    if (!on) this.http.dropExecs();
  }

  /** Forgets watch history, so that resuming from an old resourceVersion gets 410 Gone. */
  compactHistory(): void {
    this.store.compactHistory();
  }

  /** A LocalQueue whose ClusterQueue cannot admit anything: its workloads get Kueue's Inadmissible condition. */
  addInadmissibleQueue(name: string, message: string, ns = 'default'): void {
    this.kueue.addInadmissibleQueue(name, message, ns);
  }

  setKueueQuota(n: number): void {
    this.kueue.setQuota(n);
  }

  list(plural: string, ns = 'default'): Obj[] {
    return this.store.list(plural, ns);
  }

  /** Creates a Job as any API client would (for leftovers that no run of this test made). */
  createJob(job: Obj, ns = 'default'): Obj {
    const answer = this.jobs.create(ns, structuredClone(job));
    if (!('body' in answer)) throw new Error(answer.message);
    return answer.body;
  }

  /** Evicts (preempts) the admitted workload of a Job: Kueue suspends the Job, its pod goes, and it waits for quota again. */
  evict(jobName: string, ns = 'default', reason = 'Preempted'): void {
    const job = this.store.get('jobs', ns, jobName);
    if (!job) throw new Error(`no admitted workload for job ${jobName}`);
    this.kueue.evict(job, reason);
  }
}
