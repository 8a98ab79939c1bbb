import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type * as k8s from '@kubernetes/client-node';
import { ErrorCode, QwexError } from '../../errors.js';

/**
 * A connection to one cluster: the kubeconfig's context (or the one named),
 * its namespace (or the one named), and the API clients qwex uses. Nothing
 * from the kubeconfig but the context, namespace and server address is ever
 * put in a record, a log or an error.
 */
export interface Cluster {
  lib: typeof k8s;
  config: k8s.KubeConfig;
  context: string;
  namespace: string;
  server: string;
  batch: k8s.BatchV1Api;
  core: k8s.CoreV1Api;
  custom: k8s.CustomObjectsApi;
}

/** Where the kubeconfig is read from, as kubectl does: $KUBECONFIG (first file), else ~/.kube/config. */
export function kubeconfigPath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = env.KUBECONFIG?.split(':').find((p) => p !== '');
  if (fromEnv) return existsSync(fromEnv) ? fromEnv : undefined;
  const home = join(homedir(), '.kube', 'config');
  return existsSync(home) ? home : undefined;
}

/** The service account's credentials that Kubernetes mounts into a pod (a Deployment of qwexcloud uses them). */
const IN_CLUSTER_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Connects with `options.kubeconfig` when given (a qwexcloud target names
 * its own), else the kubeconfig kubectl would read, else, inside a pod, the
 * pod's service account.
 */
export async function connectCluster(options: { context?: string | undefined; namespace?: string | undefined; kubeconfig?: string | undefined }): Promise<Cluster> {
  const path = options.kubeconfig ?? kubeconfigPath();
  const inCluster = path === undefined && process.env.KUBERNETES_SERVICE_HOST !== undefined && existsSync(IN_CLUSTER_TOKEN);
  if (path === undefined && !inCluster) {
    throw new QwexError(ErrorCode.BackendUnavailable, `no kubeconfig: ${process.env.KUBECONFIG ? `KUBECONFIG names ${process.env.KUBECONFIG}, which does not exist` : `neither KUBECONFIG nor ${join(homedir(), '.kube', 'config')} is set up`}`, {
      hint: 'point KUBECONFIG at your cluster\'s kubeconfig (kind, k3s and cloud CLIs write one)',
    });
  }
  if (options.kubeconfig !== undefined && !existsSync(options.kubeconfig)) {
    throw new QwexError(ErrorCode.BackendUnavailable, `the kubeconfig ${options.kubeconfig} does not exist`, { hint: 'check the kubeconfig named in the configuration' });
  }
  const lib = await import('@kubernetes/client-node');
  const config = new lib.KubeConfig();
  try {
    if (path === undefined) config.loadFromCluster();
    else config.loadFromFile(path);
  } catch (error) {
    // The library's message can quote the file; say only where it is and what kind of problem it is.
    throw new QwexError(ErrorCode.ConfigInvalid, `cannot read the kubeconfig ${path ?? '(in-cluster)'}: ${(error as Error).name}`, { hint: 'check it with kubectl config view' });
  }
  if (options.context !== undefined) {
    if (!config.getContextObject(options.context)) {
      throw new QwexError(ErrorCode.Usage, `the kubeconfig ${path} has no context "${options.context}"`, {
        hint: `contexts there: ${config.getContexts().map((c) => c.name).join(', ') || 'none'}`,
      });
    }
    config.setCurrentContext(options.context);
  }
  const context = config.getCurrentContext();
  const cluster = config.getCurrentCluster();
  if (!context || !cluster) {
    throw new QwexError(ErrorCode.ConfigInvalid, `the kubeconfig ${path} has no current context`, { hint: 'pass --context NAME, or kubectl config use-context NAME' });
  }
  const namespace = options.namespace ?? config.getContextObject(context)?.namespace ?? 'default';
  return {
    lib,
    config,
    context,
    namespace,
    server: cluster.server,
    batch: config.makeApiClient(lib.BatchV1Api),
    core: config.makeApiClient(lib.CoreV1Api),
    custom: config.makeApiClient(lib.CustomObjectsApi),
  };
}

/** The HTTP status of a failed API call, or undefined when the API was not reached. */
export function statusOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' && code >= 100 && code < 600 ? code : undefined;
}

/** The API's own `Status.message`, when the error carries one. */
export function apiMessage(error: unknown): string | undefined {
  let body = (error as { body?: unknown } | null)?.body;
  if (typeof body === 'string') {
    const text = body;
    try {
      body = JSON.parse(text);
    } catch {
      return text.trim() || undefined;
    }
  }
  const message = (body as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message : undefined;
}

/**
 * An API failure as a qwex error: forbidden names the verb, the resource and
 * the namespace; unreachable names the server; the rest quotes the API.
 */
export function clusterError(error: unknown, cluster: Pick<Cluster, 'server' | 'namespace' | 'context'>, what: { verb: string; resource: string }): QwexError {
  const status = statusOf(error);
  const message = apiMessage(error);
  if (status === undefined) {
    const cause = (error as { cause?: { code?: string } } | null)?.cause?.code ?? (error as { code?: unknown } | null)?.code;
    const detail = typeof cause === 'string' ? cause : String((error as Error)?.message ?? error).split('\n')[0];
    return new QwexError(ErrorCode.BackendUnavailable, `the Kubernetes API at ${cluster.server} (context ${cluster.context}) cannot be reached: ${detail}`, {
      hint: 'check that the cluster is up and that kubectl --context works',
      transient: true,
    });
  }
  if (status === 401) {
    return new QwexError(ErrorCode.BackendUnavailable, `the Kubernetes API at ${cluster.server} refused the credentials of context ${cluster.context} (401 Unauthorized)`, {
      hint: 'log in again (your cloud CLI), or refresh the kubeconfig',
    });
  }
  if (status === 403) {
    return new QwexError(ErrorCode.BackendUnavailable, `forbidden: you may not ${what.verb} ${what.resource} in namespace ${cluster.namespace}${message ? ` (${message})` : ''}`, {
      hint: `ask for a Role that allows "${what.verb}" on "${what.resource}" in ${cluster.namespace}, or pass --namespace`,
    });
  }
  // Too many requests, or an API server that is restarting or overloaded (5xx): an answer that says "not now".
  return new QwexError(ErrorCode.BackendUnavailable, `cannot ${what.verb} ${what.resource} in namespace ${cluster.namespace}: ${message ?? `HTTP ${status}`}`, {
    transient: status === 429 || status >= 500,
  });
}
