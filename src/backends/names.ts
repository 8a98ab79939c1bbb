/** The backends this version can run. Config validation and the factory both read this list. */
export const BACKEND_NAMES = ['local', 'docker', 'ssh'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Backends described by the design but not built yet: named in errors so users know why. */
export const PLANNED_BACKENDS = ['k8s', 'kueue'] as const;

export function isBackendName(name: string): name is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(name);
}
