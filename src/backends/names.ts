/** The backends this version can run. Config validation and the factory both read this list. */
export const BACKEND_NAMES = ['local', 'docker', 'ssh'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Backends described by the design but not built yet: named in errors so users know why. */
export const PLANNED_BACKENDS = ['k8s', 'kueue'] as const;

/** Backends whose jobs run in a container and so carry a ContainerConfig (image, resources...). */
export const CONTAINER_BACKENDS: ReadonlySet<string> = new Set(['docker']);

/** Backends that run the workspace snapshot on another machine: their runs always get one, and a host. */
export const REMOTE_BACKENDS: ReadonlySet<string> = new Set(['ssh']);

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}
