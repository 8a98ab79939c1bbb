/**
 * A cloud run to a qwexcloud kueue target, as a user runs the CLI: `--cluster`
 * and `--queue` are passed on, and while Kueue holds the Job back the local
 * record shows what it waits for there (the server's record, read by the
 * kueue backend's own descriptor). The cluster is the FAKE Kubernetes API
 * (test/fake-kube-api.ts: its pods are real containers on the Docker
 * engine); skipped without Docker unless QWEX_REQUIRE_DOCKER=1.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CloudDetails } from '../src/backends/cloud/index.js';
import type { ListedRun } from '../src/protocol.js';
import type { Run } from '../src/run/model.js';
import { closeDatabases, startCloud, type CloudServer } from './cloud.js';
import { cloudUser, login, type CloudUser } from './cloud-cli-harness.js';
import { qwex, qwexJson, requireComponent, until } from './helpers.js';
import { CLUSTER_IMAGE, TEST_QUEUE, clusterUnavailable, startTestCluster, type TestCluster } from './kube-cluster.js';

let reason: string | undefined;
let cluster: TestCluster | undefined;
let server: CloudServer | undefined;
let token: string;
let user: CloudUser;

beforeAll(async () => {
  reason = (await clusterUnavailable()) ?? (process.env.QWEX_K8S_KUBECONFIG ? 'the cloud CLI tests drive the fake Kubernetes API' : undefined);
  if (reason) return;
  // No quota at first: every workload waits in the queue until the test gives some.
  cluster = await startTestCluster('kueue', { kueueQuota: 0 });
  server = await startCloud({
    db: 'sqlite',
    config: `targets:
  - name: here
    backend: local
  - name: queued
    backend: kueue
    kubeconfig: ${cluster.env.KUBECONFIG}
    context: fake
    queues: [${TEST_QUEUE}]
    image: ${CLUSTER_IMAGE}
    options: { pull: never, pending_timeout_seconds: 120 }
`,
  });
  token = await server.token('kim');
});
afterAll(async () => {
  await server?.cleanup();
  await cluster?.close();
  await closeDatabases();
});
beforeEach(async (ctx) => {
  requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', reason);
  user = cloudUser();
  await login(user, server!.url, token);
});
afterEach(async () => {
  if (!user) return;
  expect(user.everything()).not.toContain(token);
  await user.cleanup();
});

describe('a cloud run to a kueue target', () => {
  it('--cluster and --queue choose the target; while Kueue holds it, ps and status say so; then it runs to its end', { timeout: 180_000 }, async () => {
    writeFileSync(join(user.project, 'data.txt'), 'the workspace');
    const id = (await qwex(user, ['run', '-d', '--backend', 'cloud', '--cluster', 'fake', '--queue', TEST_QUEUE, '--', 'sh', '-c', 'cat data.txt'])).stdout.trim();
    const waiting = await until(async () => {
      const [row] = await qwexJson<ListedRun[]>(user, ['ps']);
      return row?.waiting?.reason ? row : undefined;
    }, 60_000, 'the run to wait in Kueue\'s queue');
    // Pending while Kueue holds it (its Job exists, no pod runs), as a local kueue run is.
    expect(waiting).toMatchObject({ id, status: 'pending', waiting: { phase: 'queued', where: expect.stringMatching(/^qwexcloud 127\.0\.0\.1:\d+: Kueue LocalQueue qwex-test$/) } });
    const details = user.record(id).backend as CloudDetails;
    expect(details).toMatchObject({ target: 'queued', serverBackend: 'kueue', queue: TEST_QUEUE });
    const status = await qwex(user, ['status', id]);
    expect(status.stdout).toMatch(/waiting +queued in qwexcloud .*Kueue LocalQueue qwex-test/);
    expect(status.stdout).toMatch(/target +queued \(kueue, queue qwex-test\)/);

    cluster!.fake!.setKueueQuota(1);
    const [final] = await qwexJson<Run[]>(user, ['wait', id]);
    expect(final).toMatchObject({ status: 'succeeded', exitCode: 0 });
    expect(readFileSync(join(user.runDir(id), 'stdout.log'), 'utf8')).toBe('the workspace');
    expect(user.record(id).backend).toMatchObject({ cluster: 'queued', serverStatus: 'succeeded', waiting: null });

    const elsewhere = await qwex(user, ['run', '--backend', 'cloud', '--cluster', 'nowhere', '--', 'true']);
    expect(elsewhere.exitCode).toBe(1);
    expect(elsewhere.stderr).toMatch(/no cluster "nowhere" on this server/);
  });
});
