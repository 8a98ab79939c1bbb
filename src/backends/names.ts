/** The backends this version can run. Config validation and the factory both read this list. */
export const BACKEND_NAMES = ['local', 'docker', 'ssh', 'k8s', 'kueue'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Backends whose jobs run in a container and so carry a ContainerConfig (image, resources...). */
export const CONTAINER_BACKENDS: ReadonlySet<string> = new Set(['docker', 'k8s', 'kueue']);

/** Backends that run the workspace snapshot on another machine: their runs always get one (unless they do not sync). */
export const REMOTE_BACKENDS: ReadonlySet<string> = new Set(['ssh', 'k8s', 'kueue']);

/** Backends whose runs need a host (--host). */
export const HOST_BACKENDS: ReadonlySet<string> = new Set(['ssh']);

/** Backends whose runs are placed by a cluster scheduler: they do not take one of qwexd's local slots. */
export const CLUSTER_BACKENDS: ReadonlySet<string> = new Set(['k8s', 'kueue']);

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}
