/**
 * One qwexcloud in front of two clusters: two FAKE Kubernetes APIs
 * (test/kube-cluster.ts; their pods are real containers on the Docker
 * engine), the first behind a real TCP proxy that the test takes down and
 * brings back, as a cluster's API that becomes unreachable. Placement by
 * queue, labels and Kueue's queue length; health with the reason; a run on
 * the cluster that went away keeps its true outcome; new runs go to the
 * other; history stays when a cluster leaves the configuration.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ClusterInfo, CloudRunDetail } from '../src/cloud/api.js';
import type { CloudClient } from '../src/cloud/client.js';
import { closeDatabases, qwexcloud, serverArgs, startCloud, type CloudServer } from './cloud.js';
import { requireComponent, sleep, until } from './helpers.js';
import { CLUSTER_IMAGE, TEST_QUEUE, clusterUnavailable, startTestCluster, type TestCluster } from './kube-cluster.js';

/** A TCP proxy to a port: `down()` refuses connections and cuts those open, as an unreachable API server; `up()` listens again on the same port. */
class TcpProxy {
  port = 0;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly targetPort: number) {}

  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', () => resolve()));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

let reason: string | undefined;
let alphaCluster: TestCluster | undefined;
let betaCluster: TestCluster | undefined;
let proxy: TcpProxy;
let scratch: string;
let server: CloudServer | undefined;
let alice: CloudClient;
let aliceToken: string;

function targetsYaml(kubeconfigs: { alpha: string; beta?: string }): string {
  const common = `    image: ${CLUSTER_IMAGE}
    options: { pull: never, pending_timeout_seconds: 120 }`;
  return `cluster_check_seconds: 1
targets:
  - name: alpha
    backend: kueue
    kubeconfig: ${kubeconfigs.alpha}
    queues: [${TEST_QUEUE}]
    labels: { gpu: a100 }
    weight: 2
${common}
${kubeconfigs.beta === undefined ? '' : `  - name: beta
    backend: kueue
    kubeconfig: ${kubeconfigs.beta}
    queues: [${TEST_QUEUE}, batch]
    labels: { gpu: t4 }
${common}
  - name: drained
    backend: kueue
    kubeconfig: ${kubeconfigs.beta}
    queues: [${TEST_QUEUE}]
    weight: 0
${common}
`}`;
}

async function clusters(): Promise<ClusterInfo[]> {
  const response = await fetch(`${server!.url}/v1/clusters`, { headers: { authorization: `Bearer ${aliceToken}` } });
  expect(response.status).toBe(200);
  return ((await response.json()) as { clusters: ClusterInfo[] }).clusters;
}

async function cluster(name: string): Promise<ClusterInfo> {
  return (await clusters()).find((c) => c.name === name)!;
}

async function finish(id: string): Promise<{ stdout: string; run: CloudRunDetail }> {
  let stdout = '';
  const result = await alice.followLogs(id, { onData: (c) => void (stdout += c.toString()) });
  return { stdout, run: result.run! };
}

/** Follows a run to its end and checks it succeeded, saying why when it did not. */
async function succeeds(id: string, fields: Partial<CloudRunDetail> = {}): Promise<{ stdout: string; run: CloudRunDetail }> {
  const ended = await finish(id);
  expect(ended.run.status, `run ${id} on ${ended.run.target}: ${JSON.stringify(ended.run.record.error)}`).toBe('succeeded');
  expect(ended.run).toMatchObject(fields);
  return ended;
}

/** A Job of another team in alpha's LocalQueue: Kueue counts it as pending while it has no quota. */
async function foreignJob(fake: NonNullable<TestCluster['fake']>, name: string): Promise<void> {
  const response = await fetch(`${fake.url}/apis/batch/v1/namespaces/default/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name, labels: { 'kueue.x-k8s.io/queue-name': TEST_QUEUE } },
      spec: { suspend: true, template: { spec: { restartPolicy: 'Never', containers: [{ name: 'main', image: CLUSTER_IMAGE, imagePullPolicy: 'Never', command: ['true'] }] } } },
    }),
  });
  expect(response.status).toBe(201);
}

beforeAll(async () => {
  reason = await clusterUnavailable();
  if (reason !== undefined || process.env.QWEX_K8S_KUBECONFIG) return;
  scratch = mkdtempSync(join(tmpdir(), 'qwex-clusters-'));
  alphaCluster = await startTestCluster('kueue');
  betaCluster = await startTestCluster('kueue');
  // alpha's API is reached through the proxy: the kubeconfig names the proxy's address.
  proxy = new TcpProxy(Number(new URL(alphaCluster.fake!.url).port));
  await proxy.up();
  const alpha = join(scratch, 'alpha.kubeconfig');
  writeFileSync(alpha, readFileSync(alphaCluster.env.KUBECONFIG!, 'utf8').replace(alphaCluster.fake!.url, `http://127.0.0.1:${proxy.port}`), { mode: 0o600 });
  server = await startCloud({ db: 'sqlite', config: targetsYaml({ alpha, beta: betaCluster.env.KUBECONFIG! }) });
  aliceToken = await server.token('alice');
  alice = server.client(aliceToken);
  await until(async () => ((await clusters()).every((c) => c.health === 'healthy') ? true : undefined), 20_000, 'both clusters healthy');
});

afterAll(async () => {
  await server?.cleanup();
  await proxy?.down();
  await alphaCluster?.close();
  await betaCluster?.close();
  await closeDatabases();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

beforeEach((ctx) => {
  requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', reason);
  if (process.env.QWEX_K8S_KUBECONFIG) {
    console.log('skipped: two clusters need the fake Kubernetes API');
    ctx.skip();
  }
});

describe('one server, two clusters', () => {
  it('places runs by labels, queue and Kueue\'s queue length; a weight of 0 takes only runs that name it', async () => {
    const a100 = await alice.submit({ labels: { gpu: 'a100' }, job: { command: ['true'] } });
    const t4 = await alice.submit({ labels: { gpu: 't4' }, job: { command: ['true'] } });
    expect(a100).toMatchObject({ target: 'alpha', cluster: 'alpha', queue: TEST_QUEUE });
    expect(t4).toMatchObject({ target: 'beta', cluster: 'beta' });
    await expect(alice.submit({ labels: { gpu: 'h100' }, job: { command: ['true'] } })).rejects.toMatchObject({ code: 'QWEX_USAGE', message: expect.stringMatching(/no target on this server has labels gpu=h100/) });
    await expect(alice.submit({ cluster: 'alpha', labels: { gpu: 't4' }, job: { command: ['true'] } })).rejects.toMatchObject({ code: 'QWEX_USAGE', message: expect.stringMatching(/target "alpha" has no label gpu=t4/) });
    await succeeds(a100.id, { cluster: 'alpha' });
    await succeeds(t4.id, { cluster: 'beta' });

    // Only beta offers the queue "batch" (which its Kueue does not have: the run fails there, saying so).
    const batch = await alice.submit({ queue: 'batch', job: { command: ['true'] } });
    expect(batch).toMatchObject({ target: 'beta', queue: 'batch' });
    expect((await finish(batch.id)).run.record.error?.message).toMatch(/LocalQueue batch does not exist/);

    // Another team's workload waits in alpha's queue (no quota): the next run goes to beta, although alpha weighs more.
    alphaCluster!.fake!.setKueueQuota(0);
    await foreignJob(alphaCluster!.fake!, 'other-team-job');
    await until(async () => ((await cluster('alpha')).queues[0]?.pending === 1 ? true : undefined), 20_000, 'alpha\'s queue to show one pending workload');
    expect((await cluster('beta')).queues.find((q) => q.name === TEST_QUEUE)?.pending).toBe(0);
    const shorter = await alice.submit({ queue: TEST_QUEUE, job: { command: ['true'] } });
    expect(shorter.target).toBe('beta');
    alphaCluster!.fake!.setKueueQuota(100);
    await succeeds(shorter.id);
    await until(async () => ((await cluster('alpha')).queues[0]?.pending === 0 ? true : undefined), 20_000, 'alpha\'s queue to empty');
    // Equal queues, nothing running: the heavier wins.
    const heavier = await alice.submit({ queue: TEST_QUEUE, job: { command: ['true'] } });
    expect(heavier.target).toBe('alpha');
    const drained = await alice.submit({ cluster: 'drained', job: { command: ['true'] } });
    expect(drained.target).toBe('drained');
    for (const id of [heavier.id, drained.id]) await succeeds(id);
  });

  it('a cluster taken down mid-run: unhealthy with the reason; new runs go to the other or wait; its run keeps its true outcome once it returns', async () => {
    const long = await alice.submit({ cluster: 'alpha', job: { command: ['sh', '-c', 'echo started; sleep 6; echo done; exit 3'] } });
    await until(async () => ((await alice.get(long.id)).status === 'running' ? true : undefined), 60_000, 'the run to start on alpha');
    await proxy.down();
    try {
      const down = await until(async () => {
        const c = await cluster('alpha');
        return c.health === 'unhealthy' ? c : undefined;
      }, 20_000, 'alpha to be unhealthy');
      expect(down.reason).toMatch(/the Kubernetes API at http:\/\/127\.0\.0\.1:\d+ cannot be reached: ECONNREFUSED/);
      expect(Date.parse(down.since!)).toBeGreaterThan(Date.parse(long.createdAt));

      // New runs that fit both go to beta; a run that names alpha waits, saying why.
      const elsewhere = await alice.submit({ labels: {}, queue: TEST_QUEUE, job: { command: ['sh', '-c', 'echo elsewhere'] } });
      expect(elsewhere.target).toBe('beta');
      const waiting = await alice.submit({ cluster: 'alpha', job: { command: ['sh', '-c', 'echo after'] } });
      const held = await until(async () => {
        const d = await alice.get(waiting.id);
        return d.waitReason ? d : undefined;
      }, 10_000, 'the wait reason');
      expect(held).toMatchObject({ status: 'pending', waitReason: expect.stringMatching(/^cluster alpha is unhealthy since .+: the Kubernetes API at .* cannot be reached/) });
      expect((await succeeds(elsewhere.id, { cluster: 'beta' })).stdout).toBe('elsewhere\n');

      const cli = await qwexcloud(['clusters', '--json', ...serverArgs(server!), '--config', join(server!.data, '..', 'qwexcloud.yaml')]);
      expect(cli.exitCode, String(cli.stderr)).toBe(0);
      const listed = JSON.parse(String(cli.stdout)) as ClusterInfo[];
      expect(listed.find((c) => c.name === 'alpha')).toMatchObject({ health: 'unhealthy', reason: expect.stringMatching(/cannot be reached/), runs: { running: 1, pending: 1 } });
      expect(listed.find((c) => c.name === 'beta')).toMatchObject({ health: 'healthy', queues: [{ name: TEST_QUEUE, pending: 0 }, { name: 'batch' }] });

      // The command ends while the API is away (its pod is a container on the node): the record is not failed for that.
      await until(() => (alphaCluster!.fake!.list('pods').some((p) => p.status?.containerStatuses?.some((s: { name: string; state?: { terminated?: unknown } }) => s.name === 'main' && s.state?.terminated)) ? true : undefined), 30_000, 'the pod\'s command to end');
      await sleep(3000);
      expect((await alice.get(long.id)).status).toBe('running');
    } finally {
      await proxy.up();
    }
    await until(async () => ((await cluster('alpha')).health === 'healthy' ? true : undefined), 20_000, 'alpha healthy again');
    const { stdout, run } = await finish(long.id);
    expect(run).toMatchObject({ status: 'failed', exitCode: 3, endReason: 'exit', cluster: 'alpha' });
    expect(stdout).toBe('started\ndone\n');
    const after = (await alice.list({ limit: 1 })).runs[0]!;
    await succeeds(after.id, { target: 'alpha' });
  });

  it('history stays when a cluster leaves the configuration', async () => {
    const onBeta = await alice.submit({ cluster: 'beta', job: { command: ['true'] } });
    await finish(onBeta.id);
    const alphaOnly = join(scratch, 'alpha-only.yaml');
    writeFileSync(alphaOnly, targetsYaml({ alpha: join(scratch, 'alpha.kubeconfig') }));
    await server!.restart({ args: ['--config', alphaOnly] });
    expect(await alice.get(onBeta.id)).toMatchObject({ status: 'succeeded', target: 'beta', cluster: 'beta' });
    expect((await alice.list({ target: 'beta' })).runs.length).toBeGreaterThan(1);
    const listed = await clusters();
    expect(listed.find((c) => c.name === 'beta')).toMatchObject({ configured: false, backend: null, runs: { total: expect.any(Number) } });
    expect(listed.find((c) => c.name === 'beta')!.runs.total).toBeGreaterThan(1);
    await expect(alice.submit({ cluster: 'beta', job: { command: ['true'] } })).rejects.toMatchObject({ code: 'QWEX_USAGE', message: 'no cluster "beta" on this server' });
    const text = await qwexcloud(['clusters', ...serverArgs(server!), '--config', alphaOnly]);
    expect(String(text.stdout)).toMatch(/^beta\s+-\s+removed\s/m);
    expect(String(text.stdout)).toMatch(/beta: removed from the configuration; \d+ run\(s\) in the history/);
  });
});
