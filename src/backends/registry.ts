import { ErrorCode, QwexError } from '../errors.js';
import { cloud } from './cloud/index.js';
import { docker } from './docker/index.js';
import { k8s, kueue } from './k8s/index.js';
import { local } from './local/index.js';
import { ssh } from './ssh/index.js';
import type { Backend, BackendDescriptor } from './types.js';

/**
 * The one registry of backends. Adding a backend means adding its folder
 * and one entry here; generic code (config, jobs, the supervisor, listings,
 * doctor) asks these descriptors and never names a backend. The first is
 * the default.
 */
export const BACKENDS: readonly BackendDescriptor[] = [local, docker, ssh, k8s, kueue, cloud];

export const BACKEND_NAMES: readonly string[] = BACKENDS.map((b) => b.name);

export const DEFAULT_BACKEND: string = BACKENDS[0]!.name;

export function findBackend(name: string): BackendDescriptor | undefined {
  return BACKENDS.find((b) => b.name === name);
}

/** The descriptor of a backend this version has; QWEX_BACKEND_UNAVAILABLE naming the others when it has none. */
export function backendDescriptor(name: string): BackendDescriptor {
  const found = findBackend(name);
  if (found) return found;
  throw new QwexError(ErrorCode.BackendUnavailable, `backend "${name}" is not available in this version of qwex`, {
    hint: `available backends: ${BACKEND_NAMES.join(', ')}`,
  });
}

/** Loads a backend's implementation (lazily: `qwex ps` never loads one). */
export function createBackend(name: string): Promise<Backend> {
  return backendDescriptor(name).load();
}

/** The backends with a trait, e.g. every container backend, for hints. */
export function backendsWhere(predicate: (b: BackendDescriptor) => boolean): string[] {
  return BACKENDS.filter(predicate).map((b) => b.name);
}

export type { Backend, BackendDescriptor, ExitInfo, RunIO, StartedProcess } from './types.js';
