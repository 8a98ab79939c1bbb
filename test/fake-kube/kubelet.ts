/**
 * The FAKE API server's node: a kubelet whose runtime is a real Docker
 * engine. Each container of a pod is a Docker container (emptyDir volumes
 * are host directories bound into them), init containers run first, one
 * after another. As on a real node, a container's command is PID 1 of its
 * own PID namespace (so a shell there ignores SIGTERM), unless the pod sets
 * `shareProcessNamespace`: then a sandbox container is PID 1 of one
 * namespace that every container of the pod joins (Docker's
 * `--pid container:`), as the pause container is on a real node. It also
 * serves what the kubelet serves: container logs (one log per container,
 * both streams merged) and exec. What it leaves out: scheduling beyond a
 * fixed capacity, restarts, probes.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { PassThrough, type Duplex } from 'node:stream';
import type Docker from 'dockerode';
import type { WebSocket } from 'ws';
import { sleep, type Obj, type ObjectStore } from './store.js';

export const FAKE_LABEL = 'qwex-fake-kube';
/** Node capacity: a pod asking for more is unschedulable, with the scheduler's words. */
const NODE_CPUS = 64;
/** The name of the sandbox ("pause") container of a pod that shares its process namespace. */
const SANDBOX = 'POD';

export class FakeKubelet {
  /** Open log streams, cut by `dropStreams`. */
  readonly streams = new Set<{ destroy(): void }>();
  closed = false;

  constructor(
    private readonly store: ObjectStore,
    private readonly docker: Docker,
    /** Where emptyDir volumes live; also what labels this fake's containers. */
    private readonly volumes: string,
    /** The Job controller's reaction to a pod that ended. */
    private readonly podEnded: (pod: Obj, phase: 'Succeeded' | 'Failed') => void,
  ) {}

  /** Whether the pod is still the stored one (not deleted or replaced). */
  live(pod: Obj): boolean {
    return this.store.get('pods', pod.metadata.namespace, pod.metadata.name) === pod;
  }

  async createPod(job: Obj): Promise<void> {
    const name = `${job.metadata.name}-${randomUUID().slice(0, 5)}`;
    const spec = structuredClone(job.spec.template.spec) as Obj;
    const pod: Obj = {
      metadata: { name, namespace: job.metadata.namespace, uid: randomUUID(), labels: { ...job.spec.template.metadata.labels }, ownerReferences: [{ kind: 'Job', name: job.metadata.name, uid: job.metadata.uid, controller: true }], creationTimestamp: new Date().toISOString() },
      spec,
      status: { phase: 'Pending', conditions: [] },
    };
    this.store.put('pods', pod);
    job.status.active = 1;
    job.status.startTime ??= new Date().toISOString();
    this.store.touch('jobs', job);
    const cpus = [...(spec.initContainers ?? []), ...spec.containers].reduce((n: number, c: Obj) => Math.max(n, cpuOf(c.resources?.requests?.cpu ?? c.resources?.limits?.cpu)), 0);
    const gpus = spec.containers.some((c: Obj) => c.resources?.limits?.['nvidia.com/gpu'] !== undefined);
    if (cpus > NODE_CPUS || gpus) {
      pod.status.conditions = [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: `0/1 nodes are available: 1 Insufficient ${gpus ? 'nvidia.com/gpu' : 'cpu'}. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.` }];
      this.store.touch('pods', pod);
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
    this.store.touch('pods', pod);
    try {
      const sandbox = spec.shareProcessNamespace ? await this.startSandbox(pod, all[0]!.image) : undefined;
      if (spec.shareProcessNamespace && sandbox === undefined) return; // deleted meanwhile
      for (const c of (spec.initContainers ?? []) as Obj[]) {
        const code = await this.runContainer(pod, c, dirs, true, sandbox);
        if (code === undefined) return; // deleted meanwhile
        if (code !== 0) return this.podEnded(pod, 'Failed');
      }
      pod.status.phase = 'Running';
      const codes = await Promise.all((spec.containers as Obj[]).map((c) => this.runContainer(pod, c, dirs, false, sandbox)));
      if (codes.some((c) => c === undefined)) return;
      this.podEnded(pod, codes.every((c) => c === 0) ? 'Succeeded' : 'Failed');
    } catch (error) {
      if (this.live(pod)) {
        pod.status.phase = 'Failed';
        pod.status.message = String(error);
        this.store.touch('pods', pod);
      }
    }
  }

  /** The pod's sandbox: PID 1 of the namespace its containers share (docker-init over a sleep, as the pause container). */
  private async startSandbox(pod: Obj, image: string): Promise<string | undefined> {
    const name = this.dockerName(pod, SANDBOX);
    const container = await this.docker.createContainer({ name, Image: image, Entrypoint: ['sleep'], Cmd: ['2147483647'], Labels: { [FAKE_LABEL]: this.volumes }, HostConfig: { Init: true } });
    await container.start();
    if (!this.live(pod)) {
      await container.remove({ force: true }).catch(() => {});
      return undefined;
    }
    return name;
  }

  /** Runs one container of a pod to its end; its exit code, or undefined when the pod was deleted first. */
  private async runContainer(pod: Obj, c: Obj, dirs: Record<string, string>, init: boolean, sandbox: string | undefined): Promise<number | undefined> {
    if (!this.live(pod) || pod.metadata.deletionTimestamp || this.closed) return undefined;
    const env = (c.env ?? []).map((e: Obj) => `${e.name}=${e.value ?? ''}`);
    const container = await this.docker.createContainer({
      name: this.dockerName(pod, c.name),
      Image: c.image,
      ...(c.command ? { Entrypoint: c.command } : {}),
      ...(c.args ? { Cmd: c.args } : {}),
      Env: env,
      ...(c.workingDir ? { WorkingDir: c.workingDir } : {}),
      Labels: { [FAKE_LABEL]: this.volumes },
      HostConfig: {
        // No init: the command is PID 1 of its namespace, or a member of the pod's shared one, as on a node.
        Init: false,
        ...(sandbox ? { PidMode: `container:${sandbox}` } : {}),
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

  /**
   * Deletes a pod as the kubelet does: the object gets a deletionTimestamp,
   * its containers get SIGTERM and, after the grace period, SIGKILL (their
   * terminated states are recorded), and only then does the object go.
   * A second delete with a shorter grace period shortens it.
   */
  async deletePod(pod: Obj, graceSeconds?: number): Promise<void> {
    if (!this.live(pod)) return;
    const grace = graceSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
    const names = [...(pod.spec.initContainers ?? []), ...pod.spec.containers].map((c: Obj) => this.dockerName(pod, c.name));
    if (pod.metadata.deletionTimestamp) {
      if (grace === 0) await Promise.all(names.map((n) => this.docker.getContainer(n).kill().catch(() => {})));
      return;
    }
    pod.metadata.deletionTimestamp = new Date().toISOString();
    pod.metadata.deletionGracePeriodSeconds = grace;
    this.store.touch('pods', pod);
    await Promise.all(names.map((n) => this.docker.getContainer(n).stop({ t: grace }).catch(() => {})));
    await sleep(200); // the containers' terminated states are recorded first
    if (!this.live(pod)) return;
    this.store.remove('pods', pod);
    await Promise.all([...names, this.dockerName(pod, SANDBOX)].map((n) => this.docker.getContainer(n).remove({ force: true }).catch(() => {})));
    rmSync(join(this.volumes, pod.metadata.uid), { recursive: true, force: true });
  }

  containerState(pod: Obj, name: string): Obj | undefined {
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
    if (touch) this.store.touch('pods', pod);
  }

  /** GET .../pods/{name}/log: the container's log, both streams merged, with timestamps, sinceTime and follow as asked. */
  async podLog(res: ServerResponse, pod: Obj, q: URLSearchParams, fail: (code: number, reason: string, message: string) => void): Promise<void> {
    const containerName = q.get('container') ?? pod.spec.containers[0].name;
    const state = this.containerState(pod, containerName);
    if (!state || state.waiting) {
      return fail(400, 'BadRequest', `container "${containerName}" in pod "${pod.metadata.name}" is waiting to start: ${state?.waiting?.reason ?? 'ContainerCreating'}`);
    }
    const container = this.docker.getContainer(this.dockerName(pod, containerName));
    const since = q.get('sinceTime') ? Math.floor(Date.parse(q.get('sinceTime')!) / 1000) : 0;
    const follow = q.get('follow') === 'true';
    const timestamps = q.get('timestamps') === 'true';
    let raw: NodeJS.ReadableStream;
    try {
      const got = (await container.logs({ follow: follow as true, stdout: true, stderr: true, timestamps, since })) as unknown;
      // Without follow, dockerode hands back the whole multiplexed log as one Buffer.
      raw = Buffer.isBuffer(got) ? PassThrough.from([got]) : (got as NodeJS.ReadableStream);
    } catch (error) {
      return fail(404, 'NotFound', `container "${containerName}" of pod "${pod.metadata.name}" is gone: ${(error as Error).message}`);
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' });
    // Kubernetes merges a container's two streams into one log: so does this.
    const merged = new PassThrough();
    const stream = raw as unknown as NodeJS.ReadableStream & { destroy(): void };
    demux(stream, (_type, payload) => merged.write(payload));
    merged.pipe(res);
    const handle = {
      destroy: () => {
        stream.destroy();
        res.destroy();
      },
    };
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

  /** An exec session over the v4/v5.channel.k8s.io framing: stdin on channel 0, stdout 1, stderr 2, the Status on 3. */
  async exec(ws: WebSocket, pod: Obj, containerName: string, command: string[]): Promise<void> {
    const container = this.docker.getContainer(this.dockerName(pod, containerName));
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

  /** Removes every container this fake made (its label names the volumes directory). */
  async removeAll(): Promise<void> {
    const left = await this.docker.listContainers({ all: true, filters: { label: [`${FAKE_LABEL}=${this.volumes}`] } }).catch(() => []);
    await Promise.all(left.map((c) => this.docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
  }

  private dockerName(pod: Obj, container: string): string {
    return `fakekube-${this.volumes.split('-').pop()}-${pod.metadata.name}-${container}`;
  }
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
  let pending: Buffer = Buffer.alloc(0);
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
