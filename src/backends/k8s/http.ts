import type { IncomingMessage } from 'node:http';
import type { Cluster } from './cluster.js';

/**
 * Plain requests to the API server with the kubeconfig's credentials, for
 * what the generated clients do not reach well: a log stream whose drop
 * must be seen (the library's Log pipes the body and never reports a
 * premature close), and paths with sub-resources of custom APIs (Kueue's
 * visibility API).
 */
export class ApiStatusError extends Error {
  constructor(
    readonly code: number,
    readonly body: string,
  ) {
    super(`HTTP ${code}`);
  }
}

/** Opens a GET; resolves with the response once its status is 200, rejects with ApiStatusError otherwise. */
export async function apiGet(cluster: Pick<Cluster, 'config' | 'server'>, path: string, query: Record<string, string | undefined> = {}): Promise<{ response: IncomingMessage; abort(): void }> {
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
  const options: Record<string, unknown> = { method: 'GET', headers: {} };
  await cluster.config.applyToHTTPSOptions(options as never);
  const { request } = url.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(url, options, (response) => {
      if (response.statusCode === 200) {
        resolve({ response, abort: () => req.destroy() });
        return;
      }
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('end', () => reject(new ApiStatusError(response.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'))));
      response.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export async function apiGetJson<T>(cluster: Pick<Cluster, 'config' | 'server'>, path: string, query: Record<string, string | undefined> = {}): Promise<T> {
  const { response } = await apiGet(cluster, path, query);
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as T;
}
