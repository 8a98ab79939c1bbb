import type * as k8s from '@kubernetes/client-node';
import { ErrorCode } from '../../errors.js';
import type { RunError } from '../../run/model.js';
import type { ExitInfo } from '../types.js';
import type { QueueView } from './admission.js';
import { KEEPER_CONTAINER, MAIN_CONTAINER, SYNC_CONTAINER } from './manifest.js';

/**
 * What to do about a Kubernetes run, decided from what is observed of it:
 * a pure function of plain objects (its Job, its pods, where its queue
 * says it stands) and of what the follower already did and knows, to a
 * list of actions for the follower (follow-job.ts) to carry out. Nothing
 * here talks to the cluster, so every case is unit-tested on plain objects.
 *
 * One rule for the phase (issue 13): `queued` while the Job waits for
 * admission, `pending` while its pod is scheduled, pulled, initialised or
 * given the workspace, `running` from the moment the command's container
 * starts (the run becomes `running` then, through the `started` action).
 */

/** Where a cluster run stands (run.backend.phase). */
export type Phase = 'queued' | 'pending' | 'running';

/** One run of the command that was not its last: evicted, preempted, or failed with retries left. */
export interface Attempt {
  pod: string;
  startedAt?: string;
  endedAt: string;
  reason: string;
  message?: string;
}

/** What is observed of the run: its Job (undefined once deleted), its pods, and its queue while suspended. */
export interface Observed {
  job: k8s.V1Job | undefined;
  /** The Job's pods (owned by it), including those being deleted. */
  pods: k8s.V1Pod[];
  /** The last look at the queue, while the Job is suspended. */
  queue?: QueueView | undefined;
  now: number;
}

/** What the follower knows and did so far (its memory), as plain data. */
export interface Known {
  jobName: string;
  namespace: string;
  image: string;
  /** The workspace is sent to each pod (sync on): it has the init and keeper containers. */
  sync: boolean;
  retries: number;
  pendingTimeoutMs: number;
  /** A stop was asked for (cancel, timeout): the command's end is waited for, not decided. */
  stopping: boolean;
  attempts: readonly Attempt[];
  /** The pod that was admitted last (a suspension after it is an eviction). */
  admittedPod: string | undefined;
  /** Pods the workspace reached. */
  synced: readonly string[];
  /** When each waiting problem (pull error, unschedulable, inadmissible) was first seen. */
  problemSince: Readonly<Record<string, number>>;
  /** The first image-pull error of each pod: the one that says why (the back-off after it does not). */
  pullErrors: Readonly<Record<string, string>>;
}

export type Action =
  | { type: 'phase'; phase: Phase; reason?: string | undefined; message?: string | undefined; position?: number | undefined }
  /** The command's container has started (or ended after starting): the run is running. */
  | { type: 'started'; pod: string }
  | { type: 'admitted'; pod: string }
  /** The Job ran and was suspended again: an attempt (the follower asks the queue why). */
  | { type: 'evicted'; pod: string }
  /** A failed attempt with retries left: recorded and its log copied (its pod is let go: `let-go`), so that the Job controller runs the next. */
  | { type: 'retried'; attempt: Attempt }
  /** Tells the pod's keeper to exit (out/ is not collected from a failed attempt); asked again while the keeper runs on. */
  | { type: 'let-go'; pod: string }
  | { type: 'problem'; key: string; since: number }
  | { type: 'problems-cleared' }
  | { type: 'pull-error'; pod: string; message: string }
  | { type: 'upload'; pod: string }
  | { type: 'follow-log'; pod: string }
  | { type: 'renew-lease'; pod: string }
  /** A waiting problem that lasted the pending timeout: the Job is deleted and the run fails with it. */
  | { type: 'fail'; error: RunError }
  /** The end is known; with `logOf`, that pod's log is copied to its end first. */
  | { type: 'end'; exit: ExitInfo; logOf?: string };

const WAITING_ERRORS = /ErrImagePull|ImagePullBackOff|InvalidImageName|CreateContainerConfigError|CreateContainerError/;

export function decide(observed: Observed, known: Known): Action[] {
  const { job, pods } = observed;
  const live = pods.filter((p) => !p.metadata?.deletionTimestamp);
  const pod = newest(live) ?? newest(pods);
  const podName = pod?.metadata?.name ?? '';
  const main = mainState(pod);

  // A pod being deleted while nobody asked to stop the run is an eviction (or a deleted pod): not the command's end.
  if (main?.terminated && pod && (!pod.metadata?.deletionTimestamp || known.stopping)) {
    const t = main.terminated;
    // With retries left (backoffLimit), a failed attempt is not the end.
    if (t.exitCode !== 0 && !known.stopping && job && (job.status?.failed ?? 0) < known.retries) {
      // Until its keeper exits, the pod is not over and the Job controller starts no next one: a let-go that was lost
      // (an exec that failed) is asked for again.
      const recorded = known.attempts.some((a) => a.pod === podName);
      const letGo: Action[] = known.sync && (!recorded || containerRunning(pod, KEEPER_CONTAINER)) ? [{ type: 'let-go', pod: podName }] : [];
      if (recorded) return letGo;
      return [{ type: 'retried', attempt: { pod: podName, ...(t.startedAt ? { startedAt: isoTime(t.startedAt) } : {}), endedAt: isoTime(t.finishedAt ?? observed.now), reason: 'Failed', message: `exit code ${t.exitCode}; Kubernetes retries (retries: ${known.retries})` } }, ...letGo];
    }
    const exit = exitOf(t, known.image);
    return [...(exit.error?.code === ErrorCode.CommandNotFound || exit.error?.code === ErrorCode.CommandNotExecutable ? [] : [{ type: 'started' as const, pod: podName }]), { type: 'end', exit, logOf: podName }];
  }
  if (!job) {
    // Stopping: the Job is gone at once, its pod only once the kubelet has stopped it (grace period).
    if (known.stopping) return pods.length === 0 ? [{ type: 'end', exit: { exitCode: null, signal: 'SIGTERM' } }] : [];
    return [{ type: 'end', exit: { exitCode: null, signal: null, lost: `its Job ${known.jobName} was deleted in namespace ${known.namespace} before the command's end was seen` } }];
  }
  const failed = (job.status?.conditions ?? []).find((c) => c.type === 'Failed' && c.status === 'True');
  if (failed && !live.some((p) => p.status?.phase === 'Running' || p.status?.phase === 'Pending')) {
    return [{ type: 'end', exit: { exitCode: null, signal: null, error: { code: ErrorCode.ClusterJobFailed, message: `the Job failed before the command ended: ${failed.reason ?? ''}${failed.message ? `: ${failed.message}` : ''}` } } }];
  }
  if (known.stopping) return []; // the command was signalled, or the Job is being deleted: its end is waited for

  if (job.spec?.suspend) {
    const actions: Action[] = known.admittedPod === undefined ? [] : [{ type: 'evicted', pod: known.admittedPod }];
    const q = observed.queue;
    if (!q) return actions;
    actions.push({ type: 'phase', phase: 'queued', reason: q.reason, message: q.message, position: q.position });
    if (q.inadmissible) actions.push(...problem(observed, known, 'inadmissible', { code: ErrorCode.Inadmissible, message: `Kueue cannot admit the workload: ${q.message ?? 'Inadmissible'}` }));
    return actions;
  }
  if (!pod) return [{ type: 'phase', phase: 'pending', reason: 'NoPod', message: 'waiting for the Job controller to create the pod' }];
  if (pod.metadata?.deletionTimestamp) return [];
  const actions: Action[] = known.admittedPod === podName ? [] : [{ type: 'admitted', pod: podName }];

  const scheduled = (pod.status?.conditions ?? []).find((c) => c.type === 'PodScheduled');
  if (scheduled?.status === 'False' && scheduled.reason === 'Unschedulable') {
    actions.push({ type: 'phase', phase: 'pending', reason: 'Unschedulable', message: scheduled.message });
    actions.push(...problem(observed, known, `unschedulable:${podName}`, { code: ErrorCode.Unschedulable, message: `the pod cannot be scheduled: ${scheduled.message ?? 'Unschedulable'}` }));
    return actions;
  }
  const waiting = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].map((s) => s.state?.waiting).find((w) => w && WAITING_ERRORS.test(w.reason ?? ''));
  if (waiting) {
    const pull = /Image/.test(waiting.reason ?? '');
    // The back-off after a failed pull only says "Back-off pulling image": the pull's own error says why.
    const firstPullError = known.pullErrors[podName];
    if (waiting.reason === 'ErrImagePull' && waiting.message && firstPullError === undefined) actions.push({ type: 'pull-error', pod: podName, message: waiting.message });
    const why = pull && firstPullError !== undefined ? { reason: 'ErrImagePull', message: firstPullError } : { reason: waiting.reason, message: waiting.message };
    actions.push({ type: 'phase', phase: 'pending', reason: waiting.reason, message: why.message });
    actions.push(...problem(observed, known, `waiting:${podName}`, { code: pull ? ErrorCode.ImagePullFailed : ErrorCode.ContainerFailed, message: `${why.reason}: ${why.message ?? ''}`.trim() }));
    return actions;
  }
  if (Object.keys(known.problemSince).length > 0) actions.push({ type: 'problems-cleared' });
  const init = (pod.status?.initContainerStatuses ?? []).find((s) => s.name === SYNC_CONTAINER);
  if (init?.state?.terminated && init.state.terminated.exitCode !== 0) {
    actions.push({ type: 'end', exit: { exitCode: null, signal: null, error: { code: ErrorCode.SyncFailed, message: `the workspace container ended with exit ${init.state.terminated.exitCode} before the command started (the image needs sh)` } } });
    return actions;
  }
  if (known.sync && init?.state?.running && !known.synced.includes(podName)) {
    actions.push({ type: 'phase', phase: 'pending', reason: 'Syncing', message: 'sending the workspace to the pod' }, { type: 'upload', pod: podName });
    return actions;
  }
  if (main?.running) {
    actions.push({ type: 'started', pod: podName }, { type: 'phase', phase: 'running' }, { type: 'follow-log', pod: podName });
    if (known.sync) actions.push({ type: 'renew-lease', pod: podName });
  } else if (!main?.terminated) {
    actions.push({ type: 'phase', phase: 'pending', reason: main?.waiting?.reason ?? pod.status?.phase ?? 'Pending', message: main?.waiting?.message });
  }
  return actions;
}

/** A waiting problem: noted when first seen; the run fails once it has lasted the pending timeout. */
function problem(observed: Observed, known: Known, key: string, error: RunError): Action[] {
  const since = known.problemSince[key];
  if (since === undefined) return [{ type: 'problem', key, since: observed.now }];
  return observed.now - since >= known.pendingTimeoutMs ? [{ type: 'fail', error }] : [];
}

/** How the command ended, from its container's terminated state. */
export function exitOf(t: k8s.V1ContainerStateTerminated, image: string): ExitInfo {
  const endedAt = t.finishedAt ? new Date(t.finishedAt) : undefined;
  // The runtime could not execute the command (containerd's StartError): the shell's 127/126, as for Docker.
  if (t.reason === 'StartError' || t.reason === 'ContainerCannotRun') {
    const notFound = /executable file not found|no such file or directory/i.test(t.message ?? '');
    const denied = /permission denied/i.test(t.message ?? '');
    if (notFound || denied) {
      return { exitCode: notFound ? 127 : 126, signal: null, error: { code: notFound ? ErrorCode.CommandNotFound : ErrorCode.CommandNotExecutable, message: `${notFound ? 'command not found' : 'permission denied'} in ${image}: ${t.message}` } };
    }
  }
  return {
    exitCode: t.exitCode ?? null,
    signal: null,
    ...(endedAt && !Number.isNaN(endedAt.getTime()) ? { endedAt } : {}),
    ...(t.reason === 'OOMKilled' ? { error: { code: ErrorCode.OutOfMemory, message: 'Kubernetes killed the container: it ran out of memory (see the memory limit)' } } : {}),
  };
}

export function mainState(pod: k8s.V1Pod | undefined): k8s.V1ContainerState | undefined {
  return pod?.status?.containerStatuses?.find((s) => s.name === MAIN_CONTAINER)?.state;
}

export function containerRunning(pod: k8s.V1Pod | undefined, name: string): boolean {
  return pod?.status?.containerStatuses?.find((s) => s.name === name)?.state?.running !== undefined;
}

/** The pod created last (creation time, then resourceVersion). */
export function newest(pods: readonly k8s.V1Pod[]): k8s.V1Pod | undefined {
  const created = (p: k8s.V1Pod): number => new Date(p.metadata?.creationTimestamp ?? 0).getTime() || 0;
  return [...pods].sort((a, b) => created(a) - created(b) || Number(a.metadata?.resourceVersion ?? 0) - Number(b.metadata?.resourceVersion ?? 0)).pop();
}

/** A time from the API as ISO text: the client gives Dates from lists and strings from watches. */
export function isoTime(value: Date | string | number): string {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString();
}
