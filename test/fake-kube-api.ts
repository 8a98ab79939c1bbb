/**
 * A FAKE Kubernetes API server, for CI where no real cluster can be had.
 *
 * It implements only the endpoints qwex's k8s and kueue backends use, over
 * real HTTP on 127.0.0.1 (the backend talks to it with
 * @kubernetes/client-node, exactly as to a real API server): Jobs
 * (create/get/list/watch/delete with propagation), Pods (list/watch/log with
 * follow, timestamps and sinceTime, exec over WebSocket with the
 * v4/v5.channel.k8s.io framing), namespaces, and for Kueue the LocalQueue,
 * Workload and visibility (pendingworkloads) objects. It keeps the API's
 * semantics where qwex depends on them: one resourceVersion counter, watch
 * events ADDED/MODIFIED/DELETED from a given resourceVersion and 410 Gone for
 * one too old, Job conditions (Complete/Failed/Suspended), Kueue's
 * QuotaReserved/Admitted/Evicted conditions, `Status` error bodies.
 *
 * Pods really run: its "node" is a real Docker engine. Each container of a
 * pod is a Docker container (emptyDir volumes are host directories bound
 * into them), init containers run first, one after another. What the fake
 * leaves out: scheduling beyond a fixed node capacity, restarts, probes,
 * RBAC beyond a list of forbidden verb/resource pairs, field selectors.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Duplex } from 'node:stream';
import Docker from 'dockerode';
import { WebSocketServer, type WebSocket } from 'ws';

type Obj = Record<string, any>;  

interface Kind {
  /** The URL segment and the key prefix. */
  plural: string;
  apiVersion: string;
  kind: string;
}

const KINDS: Record<string, Kind> = {
  jobs: { plural: 'jobs', apiVersion: 'batch/v1', kind: 'Job' },
  pods: { plural: 'pods', apiVersion: 'v1', kind: 'Pod' },
  workloads: { plural: 'workloads', apiVersion: 'kueue.x-k8s.io/v1beta1', kind: 'Workload' },
  localqueues: { plural: 'localqueues', apiVersion: 'kueue.x-k8s.io/v1beta1', kind: 'LocalQueue' },
};

const FAKE_LABEL = 'qwex-fake-kube';
/** Node capacity: a pod asking for more is unschedulable, with the scheduler's words. */
const NODE_CPUS = 64;

interface WatchEvent {
  rv: number;
  plural: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}

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
  url = '';
  private server: Server | undefined;
  private readonly wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has('v5.channel.k8s.io') ? 'v5.channel.k8s.io' : protocols.has('v4.channel.k8s.io') ? 'v4.channel.k8s.io' : false) });
  private readonly docker = new Docker();
  private readonly objects = new Map<string, Obj>();
  private readonly history: WatchEvent[] = [];
  private readonly watchers = new Set<{ plural: string; ns: string; selector: Selector; send(e: WatchEvent): void; end(): void }>();
  private readonly streams = new Set<{ destroy(): void }>();
  private readonly sockets = new Set<Socket>();
  private rv = 1;
  private closed = false;
  private readonly namespaces: Set<string>;
  private readonly forbidden = new Set<string>();
  private readonly volumes: string;
  private quota: number;
  private readonly inadmissible = new Map<string, string>();
  private readonly historyLimit: number;
  /** Requests seen, for tests that check what the client asked (method and path with query). */
  readonly requests: string[] = [];

  constructor(options: FakeKubeOptions = {}) {
    this.token = options.token ?? `fake-token-${randomUUID()}`;
    this.namespaces = new Set(options.namespaces ?? ['default']);
    this.quota = options.kueueQuota ?? Infinity;
    this.historyLimit = options.historyLimit ?? 10_000;
    this.volumes = mkdtempSync(join(tmpdir(), 'qwex-fake-kube-'));
    for (const q of options.localQueues ?? []) {
      const [ns, name] = q.split('/') as [string, string];
      this.put('localqueues', { metadata: { namespace: ns, name }, spec: { clusterQueue: 'cluster-queue' }, status: {} });
    }
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) this.status(res, 500, 'InternalError', String((error as Error)?.stack ?? error));
        else res.destroy();
      });
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.server.on('upgrade', (req, socket, head) => this.upgrade(req, socket as Socket, head));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
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
    this.closed = true;
    for (const w of this.watchers) w.end();
    for (const s of this.streams) s.destroy();
    for (const c of this.wss.clients) c.terminate();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    for (const s of this.sockets) s.destroy();
    const left = await this.docker.listContainers({ all: true, filters: { label: [`${FAKE_LABEL}=${this.volumes}`] } }).catch(() => []);
    await Promise.all(left.map((c) => this.docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
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
    for (const w of this.watchers) w.end();
    for (const s of this.streams) s.destroy();
    for (const c of this.wss.clients) c.terminate();
  }

  /** Forgets watch history, so that resuming from an old resourceVersion gets 410 Gone. */
  compactHistory(): void {
    this.history.length = 0;
  }

  /** A LocalQueue whose ClusterQueue cannot admit anything: its workloads get Kueue's Inadmissible condition. */
  addInadmissibleQueue(name: string, message: string, ns = 'default'): void {
    this.put('localqueues', { metadata: { namespace: ns, name }, spec: { clusterQueue: 'missing-cluster-queue' }, status: {} });
    this.inadmissible.set(`${ns}/${name}`, message);
  }

  setKueueQuota(n: number): void {
    this.quota = n;
    this.kueueSchedule();
  }

  list(plural: string, ns = 'default'): Obj[] {
    return [...this.objects.values()].filter((o) => o.__plural === plural && o.metadata.namespace === ns).map(strip);
  }

  /** Evicts (preempts) the admitted workload of a Job: Kueue suspends the Job, its pod goes, and it waits for quota again. */
  evict(jobName: string, ns = 'default', reason = 'Preempted'): void {
    const job = this.get('jobs', ns, jobName);
    const wl = job && this.workloadOf(job);
    if (!job || !wl) throw new Error(`no admitted workload for job ${jobName}`);
    const now = new Date().toISOString();
    wl.status.conditions = [
      { type: 'Evicted', status: 'True', reason, message: `Preempted to accommodate a higher priority Workload`, lastTransitionTime: now },
      { type: 'QuotaReserved', status: 'False', reason: 'Pending', message: 'couldn\'t assign flavors to pod set main: insufficient unused quota', lastTransitionTime: now },
      { type: 'Admitted', status: 'False', reason: 'NoReservation', message: 'The workload has no reservation', lastTransitionTime: now },
    ];
    wl.__admitted = false;
    wl.__evictedUntil = Date.now() + 1500;
    this.touch('workloads', wl);
    job.spec.suspend = true;
    this.touch('jobs', job);
    this.jobChanged(job);
    setTimeout(() => this.kueueSchedule(), 1600).unref();
  }

  // ---- HTTP ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    this.requests.push(`${req.method} ${url.pathname}${url.search}`);
    if (req.headers.authorization !== `Bearer ${this.token}`) return this.status(res, 401, 'Unauthorized', 'Unauthorized');
    const body = req.method === 'POST' || req.method === 'PATCH' || req.method === 'DELETE' ? await readBody(req) : undefined;
    const p = url.pathname.split('/').filter(Boolean);
    const q = url.searchParams;

    // /api/v1/namespaces/{ns}
    if (p[0] === 'api' && p[2] === 'namespaces' && p.length === 4 && req.method === 'GET') {
      if (!this.namespaces.has(p[3]!)) return this.status(res, 404, 'NotFound', `namespaces "${p[3]}" not found`, { name: p[3], kind: 'namespaces' });
      return this.json(res, 200, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: p[3] }, status: { phase: 'Active' } });
    }
    // visibility: /apis/visibility.kueue.x-k8s.io/v1beta1/namespaces/{ns}/localqueues/{name}/pendingworkloads
    if (p[1] === 'visibility.kueue.x-k8s.io' && p[7] === 'pendingworkloads') {
      const pending = this.pendingWorkloads().filter((w) => w.spec.queueName === p[6] && w.metadata.namespace === p[4]);
      return this.json(res, 200, {
        kind: 'PendingWorkloadsSummary',
        apiVersion: 'visibility.kueue.x-k8s.io/v1beta1',
        items: pending.map((w, i) => ({ metadata: { name: w.metadata.name, namespace: w.metadata.namespace }, localQueueName: p[6], positionInLocalQueue: i, positionInClusterQueue: i, priority: 0 })),
      });
    }
    // /api/v1/namespaces/{ns}/{plural}[/{name}[/{sub}]] or /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]
    const base = p[0] === 'api' ? 2 : 3;
    if (p[base] !== 'namespaces' || p.length < base + 3) return this.status(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const ns = p[base + 1]!;
    const plural = p[base + 2]!;
    const name = p[base + 3];
    const sub = p[base + 4];
    if (!KINDS[plural]) return this.status(res, 404, 'NotFound', `the server could not find the requested resource (${plural})`);
    const verb = req.method === 'GET' ? (name ? 'get' : q.get('watch') === 'true' ? 'watch' : 'list') : req.method === 'POST' ? 'create' : req.method === 'DELETE' ? 'delete' : 'patch';
    if (this.forbidden.has(`${verb} ${plural}`)) {
      const group = KINDS[plural]!.apiVersion.includes('/') ? KINDS[plural]!.apiVersion.split('/')[0] : '';
      return this.status(res, 403, 'Forbidden', `${plural}${group ? `.${group}` : ''} is forbidden: User "system:serviceaccount:ci:qwex" cannot ${verb} resource "${plural}" in API group "${group}" in the namespace "${ns}"`, { kind: plural, group });
    }
    if (!this.namespaces.has(ns)) return this.status(res, 404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });

    if (sub === 'log') return this.podLog(res, ns, name!, q);
    if (req.method === 'GET' && name) {
      const obj = this.get(plural, ns, name);
      return obj ? this.json(res, 200, strip(obj)) : this.notFound(res, plural, name);
    }
    if (req.method === 'GET' && q.get('watch') === 'true') return this.watch(res, plural, ns, parseSelector(q.get('labelSelector')), q.get('resourceVersion'));
    if (req.method === 'GET') {
      const selector = parseSelector(q.get('labelSelector'));
      const items = this.list(plural, ns).filter((o) => matches(selector, o.metadata.labels));
      return this.json(res, 200, { apiVersion: KINDS[plural]!.apiVersion, kind: `${KINDS[plural]!.kind}List`, metadata: { resourceVersion: String(this.rv) }, items });
    }
    if (req.method === 'POST' && plural === 'jobs') return this.createJob(res, ns, JSON.parse(body!.toString('utf8')) as Obj);
    if (req.method === 'PATCH' && plural === 'jobs' && name) return this.patchJob(res, ns, name, req.headers['content-type'] ?? '', body!);
    if (req.method === 'DELETE' && plural === 'pods') {
      const options = body && body.length > 0 ? (JSON.parse(body.toString('utf8')) as Obj) : {};
      const grace = q.get('gracePeriodSeconds') ?? options.gracePeriodSeconds;
      const selector = parseSelector(q.get('labelSelector'));
      const targets = name ? [this.get('pods', ns, name)].filter(Boolean) as Obj[] : [...this.objects.values()].filter((o) => o.__plural === 'pods' && o.metadata.namespace === ns && matches(selector, o.metadata.labels));
      if (name && targets.length === 0) return this.notFound(res, 'pods', name);
      for (const pod of targets) void this.deletePod(pod, grace === undefined ? undefined : Number(grace));
      return this.json(res, 200, name ? strip(targets[0]!) : { kind: 'PodList', apiVersion: 'v1', metadata: {}, items: targets.map(strip) });
    }
    if (req.method === 'DELETE' && plural === 'jobs' && name) {
      const options = body && body.length > 0 ? (JSON.parse(body.toString('utf8')) as Obj) : {};
      const grace = q.get('gracePeriodSeconds') ?? options.gracePeriodSeconds;
      return this.deleteJob(res, ns, name, q.get('propagationPolicy') ?? options.propagationPolicy ?? 'Orphan', grace === undefined ? undefined : Number(grace));
    }
    return this.status(res, 405, 'MethodNotAllowed', `${req.method} is not supported by the fake on ${plural}`);
  }

  private createJob(res: ServerResponse, ns: string, job: Obj): void {
    const name = job.metadata?.name as string | undefined;
    if (!name || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 63) {
      return this.status(res, 422, 'Invalid', `Job.batch "${name}" is invalid: metadata.name: Invalid value: "${name}": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'`);
    }
    if (this.get('jobs', ns, name)) return this.status(res, 409, 'AlreadyExists', `jobs.batch "${name}" already exists`, { name, group: 'batch', kind: 'jobs' });
    const labels = (job.spec?.template?.metadata?.labels ?? {}) as Record<string, string>;
    job.metadata = { ...job.metadata, namespace: ns, uid: randomUUID(), creationTimestamp: new Date().toISOString() };
    job.spec.template.metadata = { ...job.spec.template.metadata, labels: { ...labels, 'batch.kubernetes.io/controller-uid': job.metadata.uid, 'batch.kubernetes.io/job-name': name, 'job-name': name } };
    job.spec.selector = { matchLabels: { 'batch.kubernetes.io/controller-uid': job.metadata.uid } };
    job.status = {};
    this.put('jobs', job);
    const queue = job.metadata.labels?.['kueue.x-k8s.io/queue-name'] as string | undefined;
    if (queue !== undefined) this.createWorkload(job, queue);
    this.jobChanged(job);
    this.json(res, 201, strip(job));
  }

  private patchJob(res: ServerResponse, ns: string, name: string, type: string, body: Buffer): void {
    const job = this.get('jobs', ns, name);
    if (!job) return this.notFound(res, 'jobs', name);
    const patch = JSON.parse(body.toString('utf8')) as unknown;
    if (type.includes('json-patch')) {
      for (const op of patch as { op: string; path: string; value: unknown }[]) {
        if (op.path === '/spec/suspend' && (op.op === 'replace' || op.op === 'add')) job.spec.suspend = op.value;
      }
    } else if ((patch as Obj).spec?.suspend !== undefined) {
      job.spec.suspend = (patch as Obj).spec.suspend;
    }
    this.touch('jobs', job);
    this.jobChanged(job);
    this.json(res, 200, strip(job));
  }

  private deleteJob(res: ServerResponse, ns: string, name: string, propagation: string, grace?: number): void {
    const job = this.get('jobs', ns, name);
    if (!job) return this.notFound(res, 'jobs', name);
    this.remove('jobs', job);
    const wl = this.workloadOf(job);
    if (wl) this.remove('workloads', wl);
    if (propagation !== 'Orphan') for (const pod of this.podsOf(job)) void this.deletePod(pod, grace);
    this.kueueSchedule();
    this.json(res, 200, { kind: 'Status', apiVersion: 'v1', status: 'Success', details: { name, group: 'batch', kind: 'jobs', uid: job.metadata.uid } });
  }

  private watch(res: ServerResponse, plural: string, ns: string, selector: Selector, from: string | null): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    const write = (e: { type: string; object: Obj }): void => void res.write(`${JSON.stringify(e)}\n`);
    const start = from === null || from === '' || from === '0' ? undefined : Number(from);
    if (start === undefined) {
      for (const o of this.list(plural, ns)) if (matches(selector, o.metadata.labels)) write({ type: 'ADDED', object: o });
    } else if (this.history.length === 0 ? start < this.rv : start < this.history[0]!.rv - 1) {
      write({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: `too old resource version: ${start} (${this.rv})`, reason: 'Expired', code: 410 } });
      res.end();
      return;
    } else {
      for (const e of this.history) if (e.rv > start && e.plural === plural && e.object.metadata.namespace === ns && matches(selector, e.object.metadata.labels)) write(e);
    }
    const watcher = {
      plural,
      ns,
      selector,
      send: (e: WatchEvent) => write({ type: e.type, object: e.object }),
      end: () => {
        this.watchers.delete(watcher);
        res.end();
      },
    };
    this.watchers.add(watcher);
    res.on('close', () => this.watchers.delete(watcher));
  }

  private async podLog(res: ServerResponse, ns: string, name: string, q: URLSearchParams): Promise<void> {
    const pod = this.get('pods', ns, name);
    if (!pod) return this.notFound(res, 'pods', name);
    const containerName = q.get('container') ?? pod.spec.containers[0].name;
    const state = this.containerState(pod, containerName);
    if (!state || state.waiting) {
      return this.status(res, 400, 'BadRequest', `container "${containerName}" in pod "${name}" is waiting to start: ${state?.waiting?.reason ?? 'ContainerCreating'}`);
    }
    const container = this.docker.getContainer(dockerName(this.volumes, pod, containerName));
    const since = q.get('sinceTime') ? Math.floor(Date.parse(q.get('sinceTime')!) / 1000) : 0;
    const follow = q.get('follow') === 'true';
    const timestamps = q.get('timestamps') === 'true';
    let raw: NodeJS.ReadableStream;
    try {
      const got = (await container.logs({ follow: follow as true, stdout: true, stderr: true, timestamps, since })) as unknown;
      // Without follow, dockerode hands back the whole multiplexed log as one Buffer.
      raw = Buffer.isBuffer(got) ? PassThrough.from([got]) : (got as NodeJS.ReadableStream);
    } catch (error) {
      return this.status(res, 404, 'NotFound', `container "${containerName}" of pod "${name}" is gone: ${(error as Error).message}`);
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' });
    // Kubernetes merges a container's two streams into one log: so does this.
    const merged = new PassThrough();
    const stream = raw as unknown as NodeJS.ReadableStream & { destroy(): void };
    demux(stream, (_type, payload) => merged.write(payload));
    merged.pipe(res);
    const handle = { destroy: () => { stream.destroy(); res.destroy(); } };
    this.streams.add(handle);
    const finish = (): void => {
      this.streams.delete(handle);
      merged.end();
    };
    stream.on('end', finish);
    stream.on('close', finish);
    stream.on('error', finish);
    res.on('close', () => {
      this.streams.delete(handle);
      stream.destroy();
    });
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const p = url.pathname.split('/').filter(Boolean);
    const reject = (code: number, message: string): void => {
      socket.end(`HTTP/1.1 ${code} ${message}\r\ncontent-type: application/json\r\n\r\n${JSON.stringify({ kind: 'Status', status: 'Failure', message, code })}`);
    };
    this.requests.push(`EXEC ${url.pathname}${url.search}`);
    if (req.headers.authorization !== `Bearer ${this.token}`) return reject(401, 'Unauthorized');
    if (p[0] !== 'api' || p[4] !== 'pods' || p[6] !== 'exec') return reject(404, 'Not Found');
    if (this.forbidden.has('create pods/exec')) return reject(403, `pods "${p[5]}" is forbidden: User "system:serviceaccount:ci:qwex" cannot create resource "pods/exec" in API group "" in the namespace "${p[3]}"`);
    const pod = this.get('pods', p[3]!, p[5]!);
    if (!pod) return reject(404, `pods "${p[5]}" not found`);
    const containerName = url.searchParams.get('container') ?? pod.spec.containers[0].name;
    if (!this.containerState(pod, containerName)?.running) return reject(400, `container ${containerName} is not running`);
    const command = url.searchParams.getAll('command');
    this.wss.handleUpgrade(req, socket, head, (ws) => void this.exec(ws, pod, containerName, command));
  }

  private async exec(ws: WebSocket, pod: Obj, containerName: string, command: string[]): Promise<void> {
    const container = this.docker.getContainer(dockerName(this.volumes, pod, containerName));
    const send = (channel: number, data: Buffer | string): void => {
      if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([channel]), Buffer.from(data)]));
    };
    // The client sends stdin as soon as the socket opens: hold it until the exec is attached.
    const early: Buffer[] = [];
    let input: ((data: Buffer) => void) | undefined;
    ws.on('message', (data: Buffer) => (input ? input(data) : early.push(data)));
    try {
      const exec = await container.exec({ Cmd: command, AttachStdin: true, AttachStdout: true, AttachStderr: true, Tty: false });
      const stream = (await exec.start({ hijack: true, stdin: true })) as unknown as Duplex;
      const out = new PassThrough();
      const err = new PassThrough();
      out.on('data', (d: Buffer) => send(1, d));
      err.on('data', (d: Buffer) => send(2, d));
      demux(stream, (type, payload) => (type === 2 ? err : out).write(payload));
      input = (data: Buffer) => {
        if (data[0] === 0) stream.write(data.subarray(1));
        else if (data[0] === 255 && data[1] === 0) stream.end(); // v5: the client closed stdin
      };
      for (const data of early.splice(0)) input(data);
      ws.on('close', () => stream.destroy());
      await new Promise<void>((resolve) => {
        stream.on('end', resolve);
        stream.on('close', resolve);
        stream.on('error', () => resolve());
      });
      const info = await exec.inspect();
      const code = info.ExitCode ?? 0;
      send(3, JSON.stringify(code === 0 ? { metadata: {}, status: 'Success' } : { metadata: {}, status: 'Failure', message: `command terminated with non-zero exit code: exit status ${code}`, reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: String(code) }] } }));
    } catch (error) {
      send(3, JSON.stringify({ metadata: {}, status: 'Failure', message: (error as Error).message, reason: 'InternalError' }));
    }
    ws.close();
  }

  // ---- controllers ----

  /** The Job controller: a Job that is not suspended and not finished has one pod; a suspended one has none. */
  private jobChanged(job: Obj): void {
    if (!this.get('jobs', job.metadata.namespace, job.metadata.name)) return;
    const pods = this.podsOf(job);
    const finished = (job.status.conditions ?? []).some((c: Obj) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
    if (job.spec.suspend) {
      for (const pod of pods) void this.deletePod(pod);
      if (job.status.active) job.status.active = 0;
      setCondition(job.status, { type: 'Suspended', status: 'True', reason: 'JobSuspended', message: 'Job suspended' });
      this.touch('jobs', job);
      return;
    }
    if (job.status.conditions?.some((c: Obj) => c.type === 'Suspended' && c.status === 'True')) {
      setCondition(job.status, { type: 'Suspended', status: 'False', reason: 'JobResumed', message: 'Job resumed' });
      this.touch('jobs', job);
    }
    const active = pods.filter((p) => !p.metadata.deletionTimestamp && p.status.phase !== 'Succeeded' && p.status.phase !== 'Failed');
    if (!finished && active.length === 0) void this.createPod(job);
  }

  private async createPod(job: Obj): Promise<void> {
    const name = `${job.metadata.name}-${randomUUID().slice(0, 5)}`;
    const spec = structuredClone(job.spec.template.spec) as Obj;
    const pod: Obj = {
      metadata: { name, namespace: job.metadata.namespace, uid: randomUUID(), labels: { ...job.spec.template.metadata.labels }, ownerReferences: [{ kind: 'Job', name: job.metadata.name, uid: job.metadata.uid, controller: true }], creationTimestamp: new Date().toISOString() },
      spec,
      status: { phase: 'Pending', conditions: [] },
    };
    this.put('pods', pod);
    job.status.active = 1;
    job.status.startTime ??= new Date().toISOString();
    this.touch('jobs', job);
    const cpus = [...(spec.initContainers ?? []), ...spec.containers].reduce((n: number, c: Obj) => Math.max(n, cpuOf(c.resources?.requests?.cpu ?? c.resources?.limits?.cpu)), 0);
    const gpus = spec.containers.some((c: Obj) => c.resources?.limits?.['nvidia.com/gpu'] !== undefined);
    if (cpus > NODE_CPUS || gpus) {
      pod.status.conditions = [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: `0/1 nodes are available: 1 Insufficient ${gpus ? 'nvidia.com/gpu' : 'cpu'}. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.` }];
      this.touch('pods', pod);
      return;
    }
    pod.status.conditions = [{ type: 'PodScheduled', status: 'True' }];
    pod.spec.nodeName = 'fake-node';
    const dirs: Record<string, string> = {};
    for (const v of spec.volumes ?? []) {
      if (!v.emptyDir) continue;
      dirs[v.name] = join(this.volumes, pod.metadata.uid, v.name);
      mkdirSync(dirs[v.name]!, { recursive: true, mode: 0o777 });
    }
    const all = [...(spec.initContainers ?? []), ...spec.containers] as Obj[];
    for (const c of all) {
      const present = await this.docker.getImage(c.image).inspect().then(() => true, () => false);
      if (!present) {
        this.setContainerStatus(pod, c.name, { waiting: { reason: 'ErrImagePull', message: `failed to pull and unpack image "${c.image}": failed to resolve reference "${c.image}": pull access denied, repository does not exist or may require authorization` } });
        setTimeout(() => {
          if (this.live(pod)) this.setContainerStatus(pod, c.name, { waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "${c.image}"` } });
        }, 500).unref();
        return;
      }
    }
    for (const c of all) this.setContainerStatus(pod, c.name, { waiting: { reason: 'PodInitializing' } }, undefined, false);
    this.touch('pods', pod);
    try {
      for (const c of (spec.initContainers ?? []) as Obj[]) {
        const code = await this.runContainer(pod, c, dirs, true);
        if (code === undefined) return; // deleted meanwhile
        if (code !== 0) return this.podEnded(pod, 'Failed');
      }
      pod.status.phase = 'Running';
      const codes = await Promise.all((spec.containers as Obj[]).map((c) => this.runContainer(pod, c, dirs, false)));
      if (codes.some((c) => c === undefined)) return;
      this.podEnded(pod, codes.every((c) => c === 0) ? 'Succeeded' : 'Failed');
    } catch (error) {
      if (this.live(pod)) {
        pod.status.phase = 'Failed';
        pod.status.message = String(error);
        this.touch('pods', pod);
      }
    }
  }

  /** Runs one container of a pod to its end; its exit code, or undefined when the pod was deleted first. */
  private async runContainer(pod: Obj, c: Obj, dirs: Record<string, string>, init: boolean): Promise<number | undefined> {
    if (!this.live(pod) || pod.metadata.deletionTimestamp || this.closed) return undefined;
    const env = (c.env ?? []).map((e: Obj) => `${e.name}=${e.value ?? ''}`);
    const container = await this.docker.createContainer({
      name: dockerName(this.volumes, pod, c.name),
      Image: c.image,
      ...(c.command ? { Entrypoint: c.command } : {}),
      ...(c.args ? { Cmd: c.args } : {}),
      Env: env,
      ...(c.workingDir ? { WorkingDir: c.workingDir } : {}),
      Labels: { [FAKE_LABEL]: this.volumes },
      HostConfig: {
        Init: true,
        LogConfig: { Type: 'local', Config: {} },
        Binds: (c.volumeMounts ?? []).filter((m: Obj) => dirs[m.name]).map((m: Obj) => `${dirs[m.name]}:${m.mountPath}`),
        ...(c.resources?.limits?.memory ? { Memory: memoryOf(c.resources.limits.memory) } : {}),
      },
    });
    if (!this.live(pod)) {
      await container.remove({ force: true }).catch(() => {});
      return undefined;
    }
    try {
      await container.start();
    } catch (error) {
      const message = String((error as { json?: { message?: string } }).json?.message ?? error);
      this.setContainerStatus(pod, c.name, { terminated: { exitCode: 128, reason: 'StartError', message, startedAt: new Date().toISOString(), finishedAt: new Date().toISOString() } }, init);
      return 128;
    }
    this.setContainerStatus(pod, c.name, { running: { startedAt: new Date().toISOString() } }, init);
    const result = (await container.wait()) as { StatusCode: number };
    if (!this.live(pod)) return undefined;
    const info = await container.inspect().catch(() => undefined);
    this.setContainerStatus(pod, c.name, {
      terminated: {
        exitCode: result.StatusCode,
        reason: info?.State.OOMKilled ? 'OOMKilled' : result.StatusCode === 0 ? 'Completed' : 'Error',
        startedAt: info?.State.StartedAt,
        finishedAt: info?.State.FinishedAt ?? new Date().toISOString(),
      },
    }, init);
    return result.StatusCode;
  }

  private podEnded(pod: Obj, phase: 'Succeeded' | 'Failed'): void {
    if (!this.live(pod)) return;
    pod.status.phase = phase;
    this.touch('pods', pod);
    if (pod.metadata.deletionTimestamp) return; // a deleted pod (suspended or deleted Job) is no failure of the Job
    const owner = pod.metadata.ownerReferences[0];
    const job = this.get('jobs', pod.metadata.namespace, owner.name);
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
        this.touch('jobs', job);
        this.jobChanged(job);
        return;
      }
      setCondition(job.status, { type: 'FailureTarget', status: 'True', reason: 'BackoffLimitExceeded', message: 'Job has reached the specified backoff limit' });
      setCondition(job.status, { type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded', message: 'Job has reached the specified backoff limit' });
    }
    this.touch('jobs', job);
    const wl = this.workloadOf(job);
    if (wl) {
      setCondition(wl.status, { type: 'Finished', status: 'True', reason: phase === 'Succeeded' ? 'Succeeded' : 'Failed', message: 'Job finished' });
      wl.__admitted = false;
      this.touch('workloads', wl);
      this.kueueSchedule();
    }
  }

  /**
   * Deletes a pod as the kubelet does: the object gets a deletionTimestamp,
   * its containers get SIGTERM and, after the grace period, SIGKILL (their
   * terminated states are recorded), and only then does the object go.
   * A second delete with a shorter grace period shortens it.
   */
  private async deletePod(pod: Obj, graceSeconds?: number): Promise<void> {
    if (!this.live(pod)) return;
    const grace = graceSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
    const names = [...(pod.spec.initContainers ?? []), ...pod.spec.containers].map((c: Obj) => dockerName(this.volumes, pod, c.name));
    if (pod.metadata.deletionTimestamp) {
      if (grace === 0) await Promise.all(names.map((n) => this.docker.getContainer(n).kill().catch(() => {})));
      return;
    }
    pod.metadata.deletionTimestamp = new Date().toISOString();
    pod.metadata.deletionGracePeriodSeconds = grace;
    this.touch('pods', pod);
    await Promise.all(names.map((n) => this.docker.getContainer(n).stop({ t: grace }).catch(() => {})));
    await sleep(200); // the containers' terminated states are recorded first
    if (!this.live(pod)) return;
    this.remove('pods', pod);
    await Promise.all(names.map((n) => this.docker.getContainer(n).remove({ force: true }).catch(() => {})));
    rmSync(join(this.volumes, pod.metadata.uid), { recursive: true, force: true });
  }

  private createWorkload(job: Obj, queue: string): void {
    const ns = job.metadata.namespace;
    const wl: Obj = {
      metadata: { name: `job-${job.metadata.name}-${randomUUID().slice(0, 5)}`, namespace: ns, labels: { 'kueue.x-k8s.io/job-uid': job.metadata.uid }, ownerReferences: [{ kind: 'Job', name: job.metadata.name, uid: job.metadata.uid }], creationTimestamp: new Date().toISOString() },
      spec: { queueName: queue, podSets: [{ name: 'main', count: 1 }] },
      status: { conditions: [] },
    };
    if (!this.get('localqueues', ns, queue)) {
      wl.status.conditions = [{ type: 'QuotaReserved', status: 'False', reason: 'Inadmissible', message: `LocalQueue ${queue} doesn't exist`, lastTransitionTime: new Date().toISOString() }];
    }
    this.put('workloads', wl);
    this.kueueSchedule();
  }

  private pendingWorkloads(): Obj[] {
    return [...this.objects.values()].filter((o) => o.__plural === 'workloads' && !o.__admitted && !o.status.conditions.some((c: Obj) => c.type === 'Finished') && this.get('localqueues', o.metadata.namespace, o.spec.queueName)).sort((a, b) => a.__rv0 - b.__rv0);
  }

  /** The Kueue controller: admits pending workloads in order while quota lasts, and unsuspends their Jobs. */
  private kueueSchedule(): void {
    let admitted = [...this.objects.values()].filter((o) => o.__plural === 'workloads' && o.__admitted).length;
    const now = new Date().toISOString();
    for (const wl of this.pendingWorkloads()) {
      if (wl.__evictedUntil && Date.now() < wl.__evictedUntil) continue;
      const why = this.inadmissible.get(`${wl.metadata.namespace}/${wl.spec.queueName}`);
      if (why !== undefined) {
        if (!wl.status.conditions.some((c: Obj) => c.reason === 'Inadmissible')) {
          setCondition(wl.status, { type: 'QuotaReserved', status: 'False', reason: 'Inadmissible', message: why, lastTransitionTime: now });
          this.touch('workloads', wl);
        }
        continue;
      }
      if (admitted >= this.quota) {
        if (!wl.status.conditions.some((c: Obj) => c.type === 'QuotaReserved')) {
          setCondition(wl.status, { type: 'QuotaReserved', status: 'False', reason: 'Pending', message: `couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor default-flavor, 1 more needed`, lastTransitionTime: now });
          this.touch('workloads', wl);
        }
        continue;
      }
      admitted++;
      wl.__admitted = true;
      wl.status.conditions = wl.status.conditions.filter((c: Obj) => c.type !== 'Evicted');
      setCondition(wl.status, { type: 'QuotaReserved', status: 'True', reason: 'QuotaReserved', message: 'Quota reserved in ClusterQueue cluster-queue', lastTransitionTime: now });
      setCondition(wl.status, { type: 'Admitted', status: 'True', reason: 'Admitted', message: 'The workload is admitted', lastTransitionTime: now });
      this.touch('workloads', wl);
      const owner = wl.metadata.ownerReferences[0];
      const job = this.get('jobs', wl.metadata.namespace, owner.name);
      if (job && job.spec.suspend) {
        job.spec.suspend = false;
        this.touch('jobs', job);
        this.jobChanged(job);
      }
    }
  }

  // ---- store ----

  private key(plural: string, ns: string, name: string): string {
    return `${plural}/${ns}/${name}`;
  }

  private get(plural: string, ns: string, name: string): Obj | undefined {
    return this.objects.get(this.key(plural, ns, name));
  }

  private live(pod: Obj): boolean {
    return this.get('pods', pod.metadata.namespace, pod.metadata.name) === pod;
  }

  private put(plural: string, obj: Obj): void {
    const kind = KINDS[plural]!;
    obj.apiVersion = kind.apiVersion;
    obj.kind = kind.kind;
    obj.__plural = plural;
    obj.metadata.resourceVersion = String(++this.rv);
    obj.__rv0 = this.rv;
    obj.status ??= {};
    this.objects.set(this.key(plural, obj.metadata.namespace, obj.metadata.name), obj);
    this.emit(plural, 'ADDED', obj);
  }

  private touch(plural: string, obj: Obj): void {
    if (this.objects.get(this.key(plural, obj.metadata.namespace, obj.metadata.name)) !== obj) return;
    obj.metadata.resourceVersion = String(++this.rv);
    this.emit(plural, 'MODIFIED', obj);
  }

  private remove(plural: string, obj: Obj): void {
    this.objects.delete(this.key(plural, obj.metadata.namespace, obj.metadata.name));
    obj.metadata.resourceVersion = String(++this.rv);
    this.emit(plural, 'DELETED', obj);
  }

  private emit(plural: string, type: WatchEvent['type'], obj: Obj): void {
    const event: WatchEvent = { rv: this.rv, plural, type, object: strip(obj) };
    this.history.push(event);
    if (this.history.length > this.historyLimit) this.history.shift();
    for (const w of this.watchers) {
      if (w.plural === plural && w.ns === obj.metadata.namespace && matches(w.selector, obj.metadata.labels)) w.send(event);
    }
  }

  private podsOf(job: Obj): Obj[] {
    return [...this.objects.values()].filter((o) => o.__plural === 'pods' && o.metadata.ownerReferences?.[0]?.uid === job.metadata.uid);
  }

  private workloadOf(job: Obj): Obj | undefined {
    return [...this.objects.values()].find((o) => o.__plural === 'workloads' && o.metadata.labels?.['kueue.x-k8s.io/job-uid'] === job.metadata.uid);
  }

  private containerState(pod: Obj, name: string): Obj | undefined {
    const all = [...(pod.status.initContainerStatuses ?? []), ...(pod.status.containerStatuses ?? [])] as Obj[];
    return all.find((s) => s.name === name)?.state;
  }

  private setContainerStatus(pod: Obj, name: string, state: Obj, init?: boolean, touch = true): void {
    const isInit = init ?? (pod.spec.initContainers ?? []).some((c: Obj) => c.name === name);
    const field = isInit ? 'initContainerStatuses' : 'containerStatuses';
    const list = (pod.status[field] ??= []) as Obj[];
    const image = [...(pod.spec.initContainers ?? []), ...pod.spec.containers].find((c: Obj) => c.name === name)?.image;
    const entry = { name, image, ready: state.running !== undefined, restartCount: 0, state };
    const i = list.findIndex((s) => s.name === name);
    if (i === -1) list.push(entry);
    else list[i] = entry;
    if (touch) this.touch('pods', pod);
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private status(res: ServerResponse, code: number, reason: string, message: string, details?: Obj): void {
    this.json(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code });
  }

  private notFound(res: ServerResponse, plural: string, name: string): void {
    const group = KINDS[plural]!.apiVersion.includes('/') ? `.${KINDS[plural]!.apiVersion.split('/')[0]}` : '';
    this.status(res, 404, 'NotFound', `${plural}${group} "${name}" not found`, { name, kind: plural });
  }
}

type Selector = [string, string | undefined][];

function parseSelector(text: string | null): Selector {
  if (!text) return [];
  return text.split(',').map((part) => {
    const [k, v] = part.split('=');
    return [k!.trim(), v?.trim()];
  });
}

function matches(selector: Selector, labels: Record<string, string> | undefined): boolean {
  return selector.every(([k, v]) => (v === undefined ? labels?.[k] !== undefined : labels?.[k] === v));
}

function setCondition(status: Obj, condition: Obj): void {
  const list = (status.conditions ??= []) as Obj[];
  const full = { lastProbeTime: null, lastTransitionTime: new Date().toISOString(), ...condition };
  const i = list.findIndex((c) => c.type === condition.type);
  if (i === -1) list.push(full);
  else list[i] = full;
}

function strip(obj: Obj): Obj {
  const copy = structuredClone(Object.fromEntries(Object.entries(obj).filter(([k]) => !k.startsWith('__')))) as Obj;
  return copy;
}

function dockerName(volumes: string, pod: Obj, container: string): string {
  return `fakekube-${volumes.split('-').pop()}-${pod.metadata.name}-${container}`;
}

function cpuOf(value: unknown): number {
  if (value === undefined) return 0;
  const text = String(value);
  return text.endsWith('m') ? Number(text.slice(0, -1)) / 1000 : Number(text);
}

function memoryOf(value: unknown): number {
  const m = /^(\d+)(Ki|Mi|Gi|Ti)?$/.exec(String(value));
  if (!m) return Number(value);
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

/**
 * Docker's multiplexed stream (8-byte header: type, 0, 0, 0, size) into
 * frames, iteratively (docker-modem's demuxStream recurses once per frame
 * and overflows the stack on large logs).
 */
function demux(stream: NodeJS.ReadableStream, onFrame: (type: number, payload: Buffer) => void): void {
  let pending = Buffer.alloc(0);
  stream.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let off = 0;
    while (pending.length - off >= 8) {
      const size = pending.readUInt32BE(off + 4);
      if (pending.length - off < 8 + size) break;
      onFrame(pending[off]!, pending.subarray(off + 8, off + 8 + size));
      off += 8 + size;
    }
    pending = pending.subarray(off);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
