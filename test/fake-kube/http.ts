/**
 * The FAKE API server's HTTP and WebSocket side: real HTTP on 127.0.0.1,
 * bearer-token authentication, RBAC as a list of forbidden verb/resource
 * pairs, the paths qwex's backends use (namespaces, Jobs, Pods with log and
 * exec, Kueue's LocalQueues, Workloads and visibility API), watches, and
 * `Status` error bodies. It routes to the store and the controllers.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { FakeJobController } from './job-controller.js';
import type { FakeKubelet } from './kubelet.js';
import type { FakeKueue } from './kueue.js';
import { KINDS, matches, parseSelector, strip, type Obj, type ObjectStore } from './store.js';

export interface HttpParts {
  store: ObjectStore;
  jobs: FakeJobController;
  kubelet: FakeKubelet;
  kueue: FakeKueue;
  token: string;
  namespaces: Set<string>;
  /** "verb plural" pairs refused with 403. */
  forbidden: Set<string>;
  /** Every request seen, "METHOD /path?query" (exec upgrades as "EXEC ..."). */
  requests: string[];
}

export class FakeKubeHttp {
  url = '';
  private server: Server | undefined;
  private readonly wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has('v5.channel.k8s.io') ? 'v5.channel.k8s.io' : protocols.has('v4.channel.k8s.io') ? 'v4.channel.k8s.io' : false) });
  private readonly sockets = new Set<Socket>();
  /** Exec sessions accepted but not run while execs are stalled. */
  private readonly held = new Set<WebSocket>();
  stallExecs = false;
  /** While true, every connection is cut as it opens: an API server that is down (clients see ECONNRESET). */
  down = false;

  constructor(private readonly parts: HttpParts) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) this.status(res, 500, 'InternalError', String((error as Error)?.stack ?? error));
        else res.destroy();
      });
    });
    this.server.on('connection', (s) => {
      if (this.down) return void s.destroy();
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.server.on('upgrade', (req, socket, head) => this.upgrade(req, socket as Socket, head));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  /** Takes the API server down (every open connection is cut, and each new one) or brings it back. */
  setDown(on: boolean): void {
    this.down = on;
    if (!on) return;
    this.dropExecs();
    for (const s of this.sockets) s.destroy();
  }

  /** Cuts every exec session (open or held). */
  dropExecs(): void {
    for (const c of this.wss.clients) c.terminate();
    this.held.clear();
  }

  async close(): Promise<void> {
    this.dropExecs();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    for (const s of this.sockets) s.destroy();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { store, jobs, kubelet, kueue, namespaces, forbidden } = this.parts;
    const url = new URL(req.url ?? '/', 'http://fake');
    this.parts.requests.push(`${req.method} ${url.pathname}${url.search}`);
    if (req.headers.authorization !== `Bearer ${this.parts.token}`) return this.status(res, 401, 'Unauthorized', 'Unauthorized');
    const body = req.method === 'POST' || req.method === 'PATCH' || req.method === 'DELETE' ? await readBody(req) : undefined;
    const p = url.pathname.split('/').filter(Boolean);
    const q = url.searchParams;

    // /api/v1/namespaces/{ns}
    if (p[0] === 'api' && p[2] === 'namespaces' && p.length === 4 && req.method === 'GET') {
      if (!namespaces.has(p[3]!)) return this.status(res, 404, 'NotFound', `namespaces "${p[3]}" not found`, { name: p[3], kind: 'namespaces' });
      return this.json(res, 200, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: p[3] }, status: { phase: 'Active' } });
    }
    // visibility: /apis/visibility.kueue.x-k8s.io/v1beta1/namespaces/{ns}/localqueues/{name}/pendingworkloads
    if (p[1] === 'visibility.kueue.x-k8s.io' && p[7] === 'pendingworkloads') return this.json(res, 200, kueue.pendingIn(p[4]!, p[6]!));
    // /api/v1/namespaces/{ns}/{plural}[/{name}[/{sub}]] or /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]
    const base = p[0] === 'api' ? 2 : 3;
    if (p[base] !== 'namespaces' || p.length < base + 3) return this.status(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const ns = p[base + 1]!;
    const plural = p[base + 2]!;
    const name = p[base + 3];
    const sub = p[base + 4];
    if (!KINDS[plural]) return this.status(res, 404, 'NotFound', `the server could not find the requested resource (${plural})`);
    const verb = req.method === 'GET' ? (name ? 'get' : q.get('watch') === 'true' ? 'watch' : 'list') : req.method === 'POST' ? 'create' : req.method === 'DELETE' ? 'delete' : 'patch';
    if (forbidden.has(`${verb} ${plural}`)) {
      const group = KINDS[plural]!.apiVersion.includes('/') ? KINDS[plural]!.apiVersion.split('/')[0] : '';
      return this.status(res, 403, 'Forbidden', `${plural}${group ? `.${group}` : ''} is forbidden: User "system:serviceaccount:ci:qwex" cannot ${verb} resource "${plural}" in API group "${group}" in the namespace "${ns}"`, { kind: plural, group });
    }
    if (!namespaces.has(ns)) return this.status(res, 404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });

    if (sub === 'log') {
      const pod = store.get('pods', ns, name!);
      if (!pod) return this.notFound(res, 'pods', name!);
      return kubelet.podLog(res, pod, q, (code, reason, message) => this.status(res, code, reason, message));
    }
    if (req.method === 'GET' && name) {
      const obj = store.get(plural, ns, name);
      return obj ? this.json(res, 200, strip(obj)) : this.notFound(res, plural, name);
    }
    if (req.method === 'GET' && q.get('watch') === 'true') return this.watch(res, plural, ns, q);
    if (req.method === 'GET') {
      const selector = parseSelector(q.get('labelSelector'));
      const items = store.list(plural, ns).filter((o) => matches(selector, o.metadata.labels));
      return this.json(res, 200, { apiVersion: KINDS[plural]!.apiVersion, kind: `${KINDS[plural]!.kind}List`, metadata: { resourceVersion: String(store.resourceVersion) }, items });
    }
    const options = body && body.length > 0 && req.method === 'DELETE' ? (JSON.parse(body.toString('utf8')) as Obj) : {};
    const grace = q.get('gracePeriodSeconds') ?? options.gracePeriodSeconds;
    if (req.method === 'POST' && plural === 'jobs') {
      const answer = jobs.create(ns, JSON.parse(body!.toString('utf8')) as Obj);
      return 'body' in answer ? this.json(res, answer.code, strip(answer.body)) : this.status(res, answer.code, answer.reason, answer.message, answer.details);
    }
    if (req.method === 'PATCH' && plural === 'jobs' && name) {
      const job = store.get('jobs', ns, name);
      if (!job) return this.notFound(res, 'jobs', name);
      jobs.patch(job, req.headers['content-type'] ?? '', JSON.parse(body!.toString('utf8')));
      return this.json(res, 200, strip(job));
    }
    if (req.method === 'DELETE' && plural === 'pods') {
      const selector = parseSelector(q.get('labelSelector'));
      const targets = name ? ([store.get('pods', ns, name)].filter(Boolean) as Obj[]) : store.all('pods', ns).filter((o) => matches(selector, o.metadata.labels));
      if (name && targets.length === 0) return this.notFound(res, 'pods', name);
      for (const pod of targets) void kubelet.deletePod(pod, grace === undefined ? undefined : Number(grace));
      return this.json(res, 200, name ? strip(targets[0]!) : { kind: 'PodList', apiVersion: 'v1', metadata: {}, items: targets.map(strip) });
    }
    if (req.method === 'DELETE' && plural === 'jobs' && name) {
      const job = store.get('jobs', ns, name);
      if (!job) return this.notFound(res, 'jobs', name);
      jobs.delete(job, q.get('propagationPolicy') ?? options.propagationPolicy ?? 'Orphan', grace === undefined ? undefined : Number(grace));
      return this.json(res, 200, { kind: 'Status', apiVersion: 'v1', status: 'Success', details: { name, group: 'batch', kind: 'jobs', uid: job.metadata.uid } });
    }
    return this.status(res, 405, 'MethodNotAllowed', `${req.method} is not supported by the fake on ${plural}`);
  }

  private watch(res: ServerResponse, plural: string, ns: string, q: URLSearchParams): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    const write = (e: { type: string; object: Obj }): void => void res.write(`${JSON.stringify(e)}\n`);
    const stop = this.parts.store.watch(plural, ns, parseSelector(q.get('labelSelector')), q.get('resourceVersion'), write, () => res.end());
    if (stop === false) return void res.end();
    res.on('close', stop);
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const { store, kubelet, forbidden } = this.parts;
    const url = new URL(req.url ?? '/', 'http://fake');
    const p = url.pathname.split('/').filter(Boolean);
    const reject = (code: number, message: string): void => {
      socket.end(`HTTP/1.1 ${code} ${message}\r\ncontent-type: application/json\r\n\r\n${JSON.stringify({ kind: 'Status', status: 'Failure', message, code })}`);
    };
    this.parts.requests.push(`EXEC ${url.pathname}${url.search}`);
    if (req.headers.authorization !== `Bearer ${this.parts.token}`) return reject(401, 'Unauthorized');
    if (p[0] !== 'api' || p[4] !== 'pods' || p[6] !== 'exec') return reject(404, 'Not Found');
    if (forbidden.has('create pods/exec')) return reject(403, `pods "${p[5]}" is forbidden: User "system:serviceaccount:ci:qwex" cannot create resource "pods/exec" in API group "" in the namespace "${p[3]}"`);
    const pod = store.get('pods', p[3]!, p[5]!);
    if (!pod) return reject(404, `pods "${p[5]}" not found`);
    const containerName = url.searchParams.get('container') ?? pod.spec.containers[0].name;
    if (!kubelet.containerState(pod, containerName)?.running) return reject(400, `container ${containerName} is not running`);
    const command = url.searchParams.getAll('command');
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      if (this.stallExecs) {
        // Accepted, and never run: what a node that does not answer looks like from the client.
        this.held.add(ws);
        ws.on('close', () => this.held.delete(ws));
        return;
      }
      void kubelet.exec(ws, pod, containerName, command);
    });
  }

  json(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  status(res: ServerResponse, code: number, reason: string, message: string, details?: Obj): void {
    this.json(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code });
  }

  private notFound(res: ServerResponse, plural: string, name: string): void {
    const group = KINDS[plural]!.apiVersion.includes('/') ? `.${KINDS[plural]!.apiVersion.split('/')[0]}` : '';
    this.status(res, 404, 'NotFound', `${plural}${group} "${name}" not found`, { name, kind: plural });
  }
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
