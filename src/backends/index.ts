import { ErrorCode, QwexError } from '../errors.js';
import { BACKEND_NAMES } from './names.js';
import type { Backend } from './types.js';

/** The one switch that picks a backend. Backends load lazily: `qwex ps` never loads one. */
export async function createBackend(name: string): Promise<Backend> {
  switch (name) {
    case 'local': {
      const { LocalBackend } = await import('./local/backend.js');
      return new LocalBackend();
    }
    case 'docker': {
      const { DockerBackend } = await import('./docker/backend.js');
      return new DockerBackend();
    }
    case 'ssh': {
      const { SshBackend } = await import('./ssh/backend.js');
      return new SshBackend();
    }
    case 'k8s': {
      const { KubernetesBackend } = await import('./k8s/backend.js');
      return new KubernetesBackend();
    }
    case 'kueue': {
      const { KueueBackend } = await import('./k8s/kueue.js');
      return new KueueBackend();
    }
    default:
      throw new QwexError(ErrorCode.BackendUnavailable, `backend "${name}" is not available in this version of qwex`, {
        hint: `available backends: ${BACKEND_NAMES.join(', ')}`,
      });
  }
}

export type { Backend, ExitInfo, RunIO, StartedProcess } from './types.js';
