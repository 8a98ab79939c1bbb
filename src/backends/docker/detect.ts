import { request } from 'node:http';
import type { Detection } from '../types.js';
import { engineEndpoint } from './engine.js';

/** How long `qwex init` waits for an engine to answer. */
const PING_TIMEOUT_MS = 2000;

/**
 * For `qwex init`: whether a Docker engine answers at DOCKER_HOST (or the
 * default socket), and its version. A plain HTTP request to its API: the
 * Docker client library is not loaded for this.
 */
export async function detectEngine(): Promise<Detection> {
  const endpoint = engineEndpoint();
  const config = { image: 'python:3.12-slim' };
  const target = endpoint.startsWith('unix://')
    ? { socketPath: endpoint.slice('unix://'.length) }
    : /^(?:tcp|http):\/\/([^:/]+)(?::(\d+))?/.exec(endpoint);
  if (target === null) return { found: false, summary: `DOCKER_HOST=${endpoint} is not an address qwex init can check`, config };
  const where = 'socketPath' in target ? { socketPath: target.socketPath } : { host: target[1], port: Number(target[2] ?? 2375) };
  return new Promise((resolve) => {
    const req = request({ ...where, path: '/version', timeout: PING_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) return resolve({ found: false, summary: `the engine at ${endpoint} answered ${res.statusCode}`, config });
        let version = '';
        try {
          version = ` ${String((JSON.parse(body) as { Version?: unknown }).Version ?? '')}`.trimEnd();
        } catch {
          // an engine that answers is enough
        }
        resolve({ found: true, summary: `Docker engine${version} at ${endpoint}`, config });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${PING_TIMEOUT_MS} ms`)));
    req.on('error', (error: NodeJS.ErrnoException) => resolve({ found: false, summary: `no Docker engine answers at ${endpoint} (${error.code ?? error.message})`, config }));
    req.end();
  });
}
