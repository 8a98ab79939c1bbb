/**
 * The cluster the k8s and kueue tests run against: the FAKE Kubernetes API
 * (test/fake-kube/, its node a real Docker engine) by default, or a
 * real cluster when QWEX_K8S_KUBECONFIG names its kubeconfig (the opt-in
 * real-cluster suite: see docs/testing.md, "Kubernetes and Kueue: the fake API
 * and the real-cluster suite").
 *
 *   QWEX_K8S_KUBECONFIG  a kubeconfig whose current context qwex may use
 *   QWEX_K8S_IMAGE       an image on the nodes with sh, tar and the busybox tools (default qwex-test/busybox:latest)
 *   QWEX_K8S_NAMESPACE   the namespace (default: the context's)
 *   QWEX_K8S_QUEUE       a Kueue LocalQueue there; without it the kueue tests admit their suspended Jobs
 *                        themselves (spec.suspend: false), as they must where Kueue is not installed
 */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeKubeApi } from './fake-kube/index.js';
import { DOCKER_TEST_IMAGE, dockerUnavailable } from './helpers.js';

export const REAL_CLUSTER = process.env.QWEX_K8S_KUBECONFIG;
export const CLUSTER_IMAGE = process.env.QWEX_K8S_IMAGE ?? DOCKER_TEST_IMAGE;
/** The LocalQueue the kueue tests submit to (the fake has one of this name). */
export const TEST_QUEUE = process.env.QWEX_K8S_QUEUE ?? 'qwex-test';

export interface TestCluster {
  env: Record<string, string>;
  /** backends.<name> lines for qwex.yaml, indented under `backends:`. */
  config: string;
  args: string[];
  /** Present for the fake: its controls and what it saw. */
  fake?: FakeKubeApi;
  /** Jobs of qwex still in the cluster (the suite checks none is left behind). */
  jobsLeft(): Promise<string[]>;
  close(): Promise<void>;
}

/** Why cluster tests cannot run here, or undefined. The fake needs a Docker engine for its node. */
export async function clusterUnavailable(): Promise<string | undefined> {
  if (REAL_CLUSTER) return undefined;
  const docker = await dockerUnavailable();
  return docker && `the fake Kubernetes API runs its pods on Docker: ${docker}`;
}

export async function startTestCluster(backend: 'k8s' | 'kueue', options: { kueueQuota?: number; namespaces?: string[] } = {}): Promise<TestCluster> {
  const base = mkdtempSync(join(tmpdir(), 'qwex-kube-'));
  const kubeconfig = join(base, 'kubeconfig');
  const config = [
    `  ${backend}:`,
    `    image: ${CLUSTER_IMAGE}`,
    `    pull: ${REAL_CLUSTER ? 'missing' : 'never'}`,
    '    pending_timeout_seconds: 20',
    ...(backend === 'kueue' ? [`    queue: ${TEST_QUEUE}`] : []),
    ...(process.env.QWEX_K8S_NAMESPACE ? [`    namespace: ${process.env.QWEX_K8S_NAMESPACE}`] : []),
    '',
  ].join('\n');
  if (REAL_CLUSTER) {
    copyFileSync(REAL_CLUSTER, kubeconfig);
    const lib = await import('@kubernetes/client-node');
    const kc = new lib.KubeConfig();
    kc.loadFromFile(kubeconfig);
    const namespace = process.env.QWEX_K8S_NAMESPACE ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
    const batch = kc.makeApiClient(lib.BatchV1Api);
    const list = async (): Promise<string[]> =>
      (await batch.listNamespacedJob({ namespace, labelSelector: 'qwex.dev/run-id' })).items.map((j) => j.metadata?.name ?? '');
    // Without Kueue, the tests admit what qwex created suspended, as Kueue would.
    let admitter: NodeJS.Timeout | undefined;
    if (backend === 'kueue' && !process.env.QWEX_K8S_QUEUE) {
      admitter = setInterval(() => {
        void batch.listNamespacedJob({ namespace, labelSelector: 'kueue.x-k8s.io/queue-name' }).then(async (jobs) => {
          for (const job of jobs.items.filter((j) => j.spec?.suspend)) {
            await batch.patchNamespacedJob({ name: job.metadata!.name!, namespace, body: [{ op: 'replace', path: '/spec/suspend', value: false }] }).catch(() => {});
          }
        }, () => {});
      }, 1000);
    }
    return {
      env: { KUBECONFIG: kubeconfig },
      config,
      args: ['--backend', backend],
      jobsLeft: list,
      close: async () => {
        if (admitter) clearInterval(admitter);
        rmSync(base, { recursive: true, force: true });
      },
    };
  }
  const fake = await new FakeKubeApi({
    localQueues: [`default/${TEST_QUEUE}`],
    ...(options.kueueQuota === undefined ? {} : { kueueQuota: options.kueueQuota }),
    ...(options.namespaces ? { namespaces: options.namespaces } : {}),
  }).start();
  fake.writeKubeconfig(kubeconfig);
  return {
    env: { KUBECONFIG: kubeconfig },
    config,
    args: ['--backend', backend],
    fake,
    jobsLeft: async () => fake.list('jobs').map((j) => j.metadata.name as string),
    close: async () => {
      await fake.close();
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/**
 * What a real cluster's log API delivered of a command's output: the output
 * itself, or with each \r\n turned into \n (containerd's CRI logger does
 * that), or a beginning of either (containerd 1.6 drops the tail of a
 * container that writes megabytes and exits at once). Returns how many
 * bytes are missing at the end (0 when all arrived); throws when what
 * arrived is anything else (a byte changed, lost or doubled mid-stream).
 */
export function deliveredOutput(got: Buffer, want: Buffer): { missing: number } {
  const crlfAsLf = Buffer.from(want.toString('latin1').replaceAll('\r\n', '\n'), 'latin1');
  const match = [want, crlfAsLf].find((w) => got.length <= w.length && got.equals(w.subarray(0, got.length)));
  if (!match) throw new Error(`what arrived (${got.length} bytes) is neither the output (${want.length} bytes), modulo \\r\\n, nor a beginning of it`);
  return { missing: match.length - got.length };
}
