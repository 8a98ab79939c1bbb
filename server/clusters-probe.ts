import type { IncomingMessage } from 'node:http';
import type * as k8s from '@kubernetes/client-node';
import type { Target } from './config.js';

/**
 * One look at a cluster target's Kubernetes API: can it be reached with the
 * target's credentials, and how many workloads wait in each of its Kueue
 * LocalQueues. Only the API server's address and an error's code are ever
 * put in a reason: never a token or a kubeconfig's content.
 *
 * Why here and not a backend descriptor method: the Kubernetes backend's
 * folder is being restructured; a `probe` on its descriptor is where this
 * belongs once that lands (see docs/cloud-clusters.md).
 */
export type ProbeResult = { ok: true; queues: QueueLength[] } | { ok: false; reason: string };

export interface QueueLength {
  name: string;
  /** Kueue's pending workloads in the LocalQueue; null where Kueue does not say (no visibility API, no Kueue). */
  pending: number | null;
}

export interface ClusterProbe {
  check(target: Target): Promise<ProbeResult>;
}

/** How long one request of a check may take before the cluster counts as unreachable. */
const PROBE_TIMEOUT_MS = 5000;
const KUEUE = 'kueue.x-k8s.io/v1beta1';
const VISIBILITY = 'visibility.kueue.x-k8s.io/v1beta1';

interface Connection {
  config: k8s.KubeConfig;
  server: string;
  namespace: string;
}

export class KubernetesProbe implements ClusterProbe {
  private readonly connections = new Map<string, Connection>();

  async check(target: Target): Promise<ProbeResult> {
    let connection: Connection;
    try {
      connection = await this.connect(target);
    } catch (error) {
      return { ok: false, reason: (error as Error).message };
    }
    const where = `the Kubernetes API at ${connection.server}`;
    let status: number;
    try {
      status = (await get(connection, `/api/v1/namespaces/${connection.namespace}`)).status;
    } catch (error) {
      return { ok: false, reason: `${where} cannot be reached: ${networkReason(error)}` };
    }
    if (status === 401) return { ok: false, reason: `${where} refused the credentials (401 Unauthorized)` };
    if (status === 404) return { ok: false, reason: `namespace ${connection.namespace} does not exist at ${connection.server}` };
    if (status >= 500) return { ok: false, reason: `${where} answered HTTP ${status}` };
    // 200, or 403 (may not read namespaces): the API answers with these credentials.
    const queues: QueueLength[] = [];
    for (const name of target.queues) queues.push({ name, pending: await pendingIn(connection, name) });
    return { ok: true, queues };
  }

  private async connect(target: Target): Promise<Connection> {
    const known = this.connections.get(target.name);
    if (known) return known;
    const lib = await import('@kubernetes/client-node');
    const config = new lib.KubeConfig();
    try {
      if (target.kubeconfig !== undefined) config.loadFromFile(target.kubeconfig);
      else config.loadFromDefault();
    } catch (error) {
      // The library's message can quote the file: only where it is and the kind of problem.
      throw new Error(`cannot read the kubeconfig ${target.kubeconfig ?? '(default)'}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).name}`, { cause: error });
    }
    if (target.context !== undefined) {
      if (!config.getContextObject(target.context)) throw new Error(`the kubeconfig ${target.kubeconfig ?? '(default)'} has no context "${target.context}"`);
      config.setCurrentContext(target.context);
    }
    const cluster = config.getCurrentCluster();
    if (!cluster) throw new Error(`the kubeconfig ${target.kubeconfig ?? '(default)'} has no current cluster`);
    const connection = { config, server: cluster.server, namespace: target.namespace ?? config.getContextObject(config.getCurrentContext())?.namespace ?? 'default' };
    this.connections.set(target.name, connection);
    return connection;
  }
}

/** Kueue's count of workloads waiting in a LocalQueue: its visibility API, else the LocalQueue's status. */
async function pendingIn(connection: Connection, queue: string): Promise<number | null> {
  const ns = connection.namespace;
  try {
    const visible = await get(connection, `/apis/${VISIBILITY}/namespaces/${ns}/localqueues/${queue}/pendingworkloads`);
    const items = (visible.json as { items?: unknown[] } | undefined)?.items;
    if (visible.status === 200 && Array.isArray(items)) return items.length;
    const local = await get(connection, `/apis/${KUEUE}/namespaces/${ns}/localqueues/${queue}`);
    const pending = (local.json as { status?: { pendingWorkloads?: unknown } } | undefined)?.status?.pendingWorkloads;
    return local.status === 200 && typeof pending === 'number' ? pending : null;
  } catch {
    return null; // unreachable, or no Kueue there: a probe says "unknown", never fails the listing
  }
}

async function get(connection: Connection, path: string): Promise<{ status: number; json: unknown }> {
  const url = new URL(connection.server.replace(/\/+$/, '') + path);
  const options: Record<string, unknown> = { method: 'GET', headers: { accept: 'application/json' }, timeout: PROBE_TIMEOUT_MS };
  await connection.config.applyToHTTPSOptions(options as never);
  const { request } = url.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(url, options, (response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          json = undefined; // not JSON (a proxy's page): the status alone answers
        }
        resolve({ status: response.statusCode ?? 0, json });
      });
      response.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${PROBE_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end();
  });
}

function networkReason(error: unknown): string {
  const e = error as { code?: string; message?: string };
  return e.code ?? e.message?.split('\n')[0] ?? String(error);
}
