import { backendDescriptor, findBackend } from '../src/backends/registry.js';
import type { CloudJobSpec, TargetInfo } from '../src/cloud/api.js';
import { DEFAULT_CONFIG, type QwexConfig } from '../src/config/config.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import { buildJob } from '../src/config/job.js';
import type { Job, Run } from '../src/run/model.js';
import type { Target } from './config.js';

/**
 * The Job a run becomes on its target (placement.ts chooses the target).
 * The target's settings are the server's: a run may choose resources, an
 * image (where the target allows) and a queue among the target's, never
 * mounts, networks, users, contexts or kubeconfigs.
 */
export function checkQueue(target: Target, queue: string | undefined): void {
  if (queue === undefined) return;
  if (!takesQueue(target.backend)) throw new QwexError(ErrorCode.Usage, `target "${target.name}" is ${target.backend}: its runs take no queue`);
  if (target.queues.length > 0 && !target.queues.includes(queue)) {
    throw new QwexError(ErrorCode.Usage, `queue "${queue}" is not one of target "${target.name}"'s`, { hint: `its queues: ${target.queues.join(', ')}` });
  }
}

/** The Job for `spec` on `target`, its working directory `project` (the run runs in its own copy of the workspace there). */
export function jobFor(target: Target, spec: CloudJobSpec, queue: string | undefined, project: string): Job {
  const backend = target.backend;
  const container = spec.container ?? {};
  if (container.image !== undefined && !target.anyImage) {
    throw new QwexError(ErrorCode.Usage, `target "${target.name}" runs its own image (${target.image}); a run may not name another`, { hint: 'leave out the image, or pick a target that allows any' });
  }
  const section: Record<string, unknown> = {
    ...target.options,
    ...(target.image === undefined ? {} : { image: target.image }),
    ...(target.context === undefined ? {} : { context: target.context }),
    ...(target.kubeconfig === undefined ? {} : { kubeconfig: target.kubeconfig }),
    ...(target.namespace === undefined ? {} : { namespace: target.namespace }),
  };
  const chosenQueue = takesQueue(backend) ? (queue ?? target.queues[0]) : undefined;
  if (takesQueue(backend) && chosenQueue === undefined && section.queue === undefined) {
    throw new QwexError(ErrorCode.Usage, `target "${target.name}" is a ${backend} target with no queues: name one`, { hint: 'pass a queue with the run' });
  }
  const config: QwexConfig = { ...structuredClone(DEFAULT_CONFIG), backend, backends: { [backend]: section } };
  const hasContainer = Object.values(container).some((v) => v !== undefined);
  return buildJob(
    {
      command: spec.command,
      ...(spec.shell === undefined ? {} : { shell: spec.shell }),
      ...(spec.env === undefined ? {} : { env: spec.env }),
      ...(spec.name === undefined ? {} : { name: spec.name }),
      ...(spec.watch === undefined ? {} : { watch: spec.watch }),
      ...(spec.timeoutMs === undefined ? {} : { timeoutMs: spec.timeoutMs }),
      ...(spec.killGraceMs === undefined ? {} : { killGraceMs: spec.killGraceMs }),
      ...(hasContainer ? { container } : {}),
      ...(chosenQueue === undefined ? {} : { cluster: { queue: chosenQueue } }),
      backend,
    },
    config,
    project,
    project,
  );
}

/**
 * The cluster and queue of a run, for its SQL row: for a cluster run, the
 * cluster is its target's name (one server may reach several clusters whose
 * kubeconfig contexts share a name); the queue is what its backend says.
 */
export function placeOf(run: Run, target?: string): { cluster: string | null; queue: string | null } {
  const descriptor = findBackend(run.job.backend);
  const place = descriptor?.place?.(run);
  const cluster = descriptor?.traits.clusterScheduled && target !== undefined ? target : (place?.cluster ?? null);
  return { cluster, queue: place?.queue ?? null };
}

/** Whether runs of this backend are admitted through a named queue. */
function takesQueue(backend: string): boolean {
  return backendDescriptor(backend).optionKeys.includes('queue');
}

export function targetInfo(target: Target): TargetInfo {
  return { name: target.name, backend: target.backend, queues: target.queues, labels: target.labels };
}
