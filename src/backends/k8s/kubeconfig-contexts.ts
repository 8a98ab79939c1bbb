import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import type { Detection } from '../types.js';
import { kubeconfigPath } from './cluster.js';

/**
 * The kubeconfig's contexts, read as plain YAML (names only, never a
 * credential) without the Kubernetes client: for Tab completion of
 * --context and for `qwex init`, which must stay quick.
 */
export async function kubeContexts(): Promise<{ path?: string; contexts: string[]; current?: string }> {
  const path = kubeconfigPath();
  if (path === undefined) return { contexts: [] };
  try {
    const config = parse(readFileSync(path, 'utf8')) as { contexts?: { name?: unknown }[]; 'current-context'?: unknown } | null;
    const contexts = Array.isArray(config?.contexts) ? config.contexts.flatMap((c) => (typeof c?.name === 'string' ? [c.name] : [])) : [];
    const current = typeof config?.['current-context'] === 'string' && contexts.includes(config['current-context']) ? config['current-context'] : undefined;
    return { path, contexts, ...(current === undefined ? {} : { current }) };
  } catch {
    // Missing, unreadable or not YAML: Tab completion and `qwex init` offer no context (the backend itself reports why).
    return { path, contexts: [] };
  }
}

/** For `qwex init`: the kubeconfig's current context (or its first), as a starting point; Kueue also needs a LocalQueue, which only the cluster knows. */
export async function detectCluster(withQueue: boolean): Promise<Detection> {
  const { path, contexts, current } = await kubeContexts();
  if (path === undefined) return { found: false, summary: 'no kubeconfig ($KUBECONFIG or ~/.kube/config)', config: { context: 'my-cluster', image: 'python:3.12-slim', ...(withQueue ? { queue: 'user-queue' } : {}) } };
  const context = current ?? contexts[0];
  if (context === undefined) return { found: false, summary: `no context in ${path}`, config: { context: 'my-cluster', image: 'python:3.12-slim', ...(withQueue ? { queue: 'user-queue' } : {}) } };
  const others = contexts.filter((c) => c !== context);
  const summary = `kubeconfig ${path}: context ${context}${current === context ? ' (current)' : ''}${others.length > 0 ? `; also ${others.join(', ')}` : ''}`;
  const config = { context, image: 'python:3.12-slim', ...(withQueue ? { queue: 'user-queue' } : {}) };
  // Whether Kueue runs there, and under which LocalQueue, only the cluster can say: the section is a suggestion.
  return withQueue ? { found: false, summary: `${summary}; set queue to one of its Kueue LocalQueues (kubectl get localqueues)`, config } : { found: true, summary, config };
}
