import { ErrorCode, QwexError } from '../src/errors.js';
import type { SubmitRequest } from '../src/cloud/api.js';
import type { Target } from './config.js';
import { checkQueue } from './targets.js';

export type PlacementRequest = Pick<SubmitRequest, 'target' | 'cluster' | 'backend' | 'queue' | 'labels'>;

/** What placement knows of each target when it chooses: health, queue length (Kueue's and the server's own) and running runs. */
export interface PlacementView {
  /** false when the target's cluster is known to be unhealthy. */
  healthy(target: Target): boolean;
  /** Runs waiting in the target's queue `queue` (for a kueue target, Kueue's count where it gives one; else the server's pending runs there). */
  pending(target: Target, queue: string | undefined): number;
  running(target: Target): number;
}

/**
 * Where a new run goes. A run may name its target (or cluster), and say
 * which backend, queue and labels it needs; every target that fits is a
 * candidate (but a weight of 0 takes only runs that name it). Among the
 * candidates whose cluster is healthy (else among all: the run then waits
 * for its cluster, with the reason), the one with the shortest queue per
 * unit of weight wins, then the fewest running per unit of weight, then the
 * heavier, then the first in the configuration.
 */
export function place(targets: readonly Target[], request: PlacementRequest, view: PlacementView): Target {
  const fits = candidates(targets, request);
  const healthy = fits.filter((t) => view.healthy(t));
  const pool = healthy.length > 0 ? healthy : fits;
  const score = (t: Target): number[] => {
    const weight = t.weight > 0 ? t.weight : 1e-9;
    const queue = request.queue ?? t.queues[0];
    return [view.pending(t, queue) / weight, view.running(t) / weight, -t.weight, targets.indexOf(t)];
  };
  const ranked = pool.map((t) => ({ t, key: score(t) })).sort((a, b) => compare(a.key, b.key));
  return ranked[0]!.t;
}

function compare(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** The targets a request fits; a usage error saying what none of them has when there are none. */
export function candidates(targets: readonly Target[], request: PlacementRequest): Target[] {
  const names = targets.map((t) => t.name).join(', ') || 'none';
  if (targets.length === 0) {
    throw new QwexError(ErrorCode.BackendUnavailable, 'this server has no targets configured', { hint: 'start it with --target local (a one-machine trial) or list targets in its config file' });
  }
  const labels = Object.entries(request.labels ?? {});
  const missing = (t: Target): string[] => labels.filter(([k, v]) => t.labels[k] !== v).map(([k, v]) => `${k}=${v}`);
  const cluster = request.cluster;
  // A cluster is named by its target's name or by its Kubernetes context (several targets may share one).
  const onCluster = (t: Target): boolean => cluster === undefined || t.name === cluster || t.context === cluster;
  if (cluster !== undefined && !targets.some((t) => t.name === cluster || t.context === cluster)) {
    throw new QwexError(ErrorCode.Usage, `no cluster "${cluster}" on this server`, { hint: `targets: ${described(targets)}` });
  }
  const named = request.target ?? (cluster !== undefined && targets.some((t) => t.name === cluster) ? cluster : undefined);
  if (named !== undefined) {
    const target = targets.find((t) => t.name === named);
    if (!target) throw new QwexError(ErrorCode.Usage, `no target "${named}" on this server`, { hint: `targets: ${names}` });
    if (request.backend !== undefined && request.backend !== target.backend) {
      throw new QwexError(ErrorCode.Usage, `target "${target.name}" runs on ${target.backend}, not ${request.backend}`, { hint: `targets: ${names}` });
    }
    if (!onCluster(target)) throw new QwexError(ErrorCode.Usage, `target "${target.name}" is not on cluster ${cluster}`, { hint: `targets: ${described(targets)}` });
    checkQueue(target, request.queue);
    const lacking = missing(target);
    if (lacking.length > 0) throw new QwexError(ErrorCode.Usage, `target "${target.name}" has no label ${lacking.join(', ')}`, { hint: `its labels: ${describeLabels(target)}` });
    return [target];
  }
  const fits = targets.filter(
    (t) => (request.backend === undefined || t.backend === request.backend) && onCluster(t) && (request.queue === undefined || t.queues.includes(request.queue)) && missing(t).length === 0,
  );
  if (fits.length === 0) {
    const wanted = [
      request.backend && `backend ${request.backend}`,
      cluster && `cluster ${cluster}`,
      request.queue && `queue ${request.queue}`,
      labels.length > 0 && `labels ${labels.map(([k, v]) => `${k}=${v}`).join(', ')}`,
    ]
      .filter(Boolean)
      .join(' and ');
    throw new QwexError(ErrorCode.Usage, `no target on this server has ${wanted}`, { hint: `targets: ${described(targets)}` });
  }
  // Weight 0: drained, it takes only runs that name it.
  const weighted = fits.filter((t) => t.weight > 0);
  return weighted.length > 0 ? weighted : fits;
}

function described(targets: readonly Target[]): string {
  const one = (t: Target): string => {
    const extras = [t.context && `on ${t.context}`, t.queues.length > 0 && t.queues.join(', '), Object.keys(t.labels).length > 0 && describeLabels(t)].filter(Boolean);
    return `${t.name} (${t.backend}${extras.length > 0 ? `; ${extras.join('; ')}` : ''})`;
  };
  return targets.map(one).join(', ');
}

/** The first target that fits (no health or queue lengths known): a server without a placement policy. */
export function firstFit(targets: readonly Target[], request: PlacementRequest): Target {
  return candidates(targets, request)[0]!;
}

function describeLabels(target: Target): string {
  return Object.entries(target.labels).map(([k, v]) => `${k}=${v}`).join(', ') || 'none';
}
