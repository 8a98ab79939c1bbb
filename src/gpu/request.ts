import { findBackend } from '../backends/registry.js';
import type { ResourceRequirements } from '../config/container.js';
import type { Job } from '../run/model.js';

/** How many GPUs, every one, or which (nvidia-smi indexes or UUIDs). */
export type GpuRequest = NonNullable<ResourceRequirements['gpus']>;

/** Whether a backend runs its command on this machine, and so on this machine's GPUs (not over SSH, not in a cluster). */
export function runsHere(backend: string): boolean {
  const descriptor = findBackend(backend);
  return descriptor !== undefined && !descriptor.traits.remote && !descriptor.traits.clusterScheduled;
}

/**
 * The GPUs of this machine a job asks for: its own request (a backend that
 * runs the command here outside a container) or its container's. Undefined
 * for a job that asks for none, or whose command runs elsewhere.
 */
export function gpuRequestOf(job: Job): GpuRequest | undefined {
  if (!runsHere(job.backend)) return undefined;
  return job.gpus ?? job.container?.resources.gpus;
}

/** "1 GPU", "2 GPUs", "every GPU", "GPU 0, GPU-5d5b..." */
export function describeRequest(request: GpuRequest): string {
  if (request === 'all') return 'every GPU';
  if (typeof request === 'number') return `${request} GPU${request === 1 ? '' : 's'}`;
  return `GPU ${request.join(', ')}`;
}
