/**
 * qwexcloud's other targets: a Docker target on the real engine (image
 * qwex-test/busybox), and k8s and kueue targets on the FAKE Kubernetes API
 * (test/fake-kube-api.ts: its pods are real containers on the same engine),
 * over SQLite and PostgreSQL. Skipped without Docker unless
 * QWEX_REQUIRE_DOCKER=1 (then a failure), as the Docker and k8s tests are.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CloudRunDetail } from '../src/cloud/api.js';
import type { CloudClient } from '../src/cloud/client.js';
import { ContentStore } from '../src/workspace/snapshot.js';
import { DATABASES, closeDatabases, skipWithoutDatabase, startCloud, type CloudServer } from './cloud.js';
import { DOCKER_TEST_IMAGE, dockerUnavailable, requireComponent, until } from './helpers.js';
import { CLUSTER_IMAGE, TEST_QUEUE, clusterUnavailable, startTestCluster, type TestCluster } from './kube-cluster.js';
import { postgresUnavailable } from './postgres.js';

const SCRIPT = 'echo "hello from $(cat data.txt)"; echo warn >&2; mkdir -p out; echo result > out/r.txt; exit 4';

async function finish(client: CloudClient, id: string): Promise<{ stdout: string; run: CloudRunDetail }> {
  let stdout = '';
  const result = await client.followLogs(id, { onData: (c) => void (stdout += c.toString()) });
  return { stdout, run: result.run! };
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

let dockerReason: string | undefined;
let clusterReason: string | undefined;
let k8s: TestCluster | undefined;
let kueue: TestCluster | undefined;
let scratch: string;
let project: string;

beforeAll(async () => {
  dockerReason = await dockerUnavailable();
  clusterReason = await clusterUnavailable();
  scratch = mkdtempSync(join(tmpdir(), 'qwexcloud-targets-'));
  project = join(scratch, 'project');
  mkdirSync(project);
  writeFileSync(join(project, 'data.txt'), 'the workspace');
  if (clusterReason === undefined && !process.env.QWEX_K8S_KUBECONFIG) {
    k8s = await startTestCluster('k8s');
    kueue = await startTestCluster('kueue');
  }
});

afterAll(async () => {
  await k8s?.close();
  await kueue?.close();
  await closeDatabases();
  rmSync(scratch, { recursive: true, force: true });
});

for (const kind of DATABASES) {
  describe(`qwexcloud targets with ${kind}`, () => {
    let server: CloudServer | undefined;
    let alice: CloudClient;
    let store: ContentStore;

    beforeAll(async () => {
      if ((kind === 'postgres' && postgresUnavailable()) || dockerReason || !k8s || !kueue) return;
      const config = `targets:
  - name: box
    backend: docker
    image: ${DOCKER_TEST_IMAGE}
    options: { pull: never }
  - name: cluster
    backend: k8s
    kubeconfig: ${k8s.env.KUBECONFIG}
    image: ${CLUSTER_IMAGE}
    labels: { kind: fake }
    options: { pull: never, pending_timeout_seconds: 20 }
  - name: queued
    backend: kueue
    kubeconfig: ${kueue.env.KUBECONFIG}
    queues: [${TEST_QUEUE}]
    image: ${CLUSTER_IMAGE}
    any_image: false
    options: { pull: never, pending_timeout_seconds: 20 }
`;
      server = await startCloud({ db: kind, config });
      alice = server.client(await server.token('alice'));
      store = new ContentStore(join(scratch, `store-${kind}`));
    });

    afterAll(async () => {
      await server?.cleanup();
    });

    beforeEach((ctx) => {
      requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', dockerReason ?? clusterReason);
      skipWithoutDatabase(ctx, kind);
      if (process.env.QWEX_K8S_KUBECONFIG) {
        console.log('skipped: the server tests drive the fake Kubernetes API');
        ctx.skip();
      }
    });

    it('lists its targets with their backends, queues and labels', async () => {
      expect(await alice.targets()).toEqual([
        { name: 'box', backend: 'docker', queues: [], labels: {} },
        { name: 'cluster', backend: 'k8s', queues: [], labels: { kind: 'fake' } },
        { name: 'queued', backend: 'kueue', queues: [TEST_QUEUE], labels: {} },
      ]);
    });

    it('a docker target runs the run in a container that is gone afterwards; its history stays, across a restart too', async () => {
      const { run: submitted } = await alice.submitProject(project, { target: 'box', command: SCRIPT, shell: true }, { store });
      expect(submitted.record.job.container).toMatchObject({ image: DOCKER_TEST_IMAGE, pull: 'never' });
      const { stdout, run } = await finish(alice, submitted.id);
      expect(run).toMatchObject({ status: 'failed', exitCode: 4, backend: 'docker', target: 'box' });
      expect(stdout).toBe('hello from the workspace\n');
      expect((await alice.logs(run.id, 'stderr')).toString()).toBe('warn\n');
      expect((await alice.artifacts(run.id)).artifacts).toEqual([{ path: 'out/r.txt', size: 7, sha256: sha256('result\n') }]);
      // The container is removed right after the final record is written.
      await until(async () => ((await execa('docker', ['ps', '-a', '-q', '--filter', `label=qwex.run-id=${run.id}`])).stdout.trim() === '' ? true : undefined), 15_000, 'the container to be removed');
      await server!.restart();
      expect(await alice.get(run.id)).toMatchObject({ status: 'failed', exitCode: 4 });
      expect((await alice.logs(run.id)).toString()).toBe('hello from the workspace\n');
      const chunks: Buffer[] = [];
      for await (const c of await alice.artifact(run.id, 'out/r.txt')) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).toString()).toBe('result\n');
    });

    it('a k8s target runs the run as a Job to its end; the Job is deleted and the record, logs and artifacts stay', async () => {
      const { run: submitted } = await alice.submitProject(project, { backend: 'k8s', command: SCRIPT, shell: true }, { store });
      expect(submitted).toMatchObject({ target: 'cluster', backend: 'k8s' });
      const { stdout, run } = await finish(alice, submitted.id);
      expect(run).toMatchObject({ status: 'failed', exitCode: 4, cluster: expect.any(String) });
      // A pod has one log: Kubernetes interleaves the command's stdout and stderr in it.
      expect(stdout.split('\n').sort()).toEqual(['', 'hello from the workspace', 'warn']);
      expect((await alice.artifacts(run.id)).artifacts).toEqual([{ path: 'out/r.txt', size: 7, sha256: sha256('result\n') }]);
      expect(await k8s!.jobsLeft()).toEqual([]);
    });

    it('a kueue target takes a queue among its own and its image only', async () => {
      const { run: submitted } = await alice.submitProject(project, { target: 'queued', queue: TEST_QUEUE, command: ['sh', '-c', 'cat data.txt'] }, { store });
      expect(submitted).toMatchObject({ backend: 'kueue', queue: TEST_QUEUE });
      const { stdout, run } = await finish(alice, submitted.id);
      expect(run).toMatchObject({ status: 'succeeded', exitCode: 0 });
      expect(stdout).toBe('the workspace');
      await expect(alice.submit({ target: 'queued', queue: 'other', job: { command: ['true'] } })).rejects.toMatchObject({ code: 'QWEX_USAGE', message: expect.stringMatching(/not one of target "queued"/) });
      await expect(alice.submit({ target: 'queued', job: { command: ['true'], container: { image: 'evil:latest' } } })).rejects.toMatchObject({ code: 'QWEX_USAGE', message: expect.stringMatching(/runs its own image/) });
      await expect(alice.submit({ backend: 'kueue', queue: 'nowhere', job: { command: ['true'] } })).rejects.toMatchObject({ code: 'QWEX_USAGE', message: expect.stringMatching(/no target on this server has backend kueue and queue nowhere/) });
    });
  });
}
