/**
 * The Kubernetes backend's decisions (src/backends/k8s/decide.ts), on plain
 * objects: what a run's Job, pods and queue look like, and what the
 * follower must do about them. No cluster, no fake: the function is pure.
 */
import { describe, expect, it } from 'vitest';
import type * as k8s from '@kubernetes/client-node';
import { decide, exitOf, newest, type Known, type Observed } from '../../src/backends/k8s/decide.js';

const NOW = Date.parse('2026-11-22T10:00:00Z');

const known = (over: Partial<Known> = {}): Known => ({
  jobName: 'qwex-r1',
  namespace: 'ml',
  image: 'busybox',
  sync: true,
  retries: 0,
  pendingTimeoutMs: 300_000,
  stopping: false,
  attempts: [],
  admittedPod: undefined,
  synced: [],
  problemSince: {},
  pullErrors: {},
  ...over,
});

const job = (over: { suspend?: boolean; failed?: number; conditions?: k8s.V1JobCondition[] } = {}): k8s.V1Job => ({
  metadata: { name: 'qwex-r1', uid: 'uid-1' },
  spec: { template: {}, ...(over.suspend === undefined ? {} : { suspend: over.suspend }) },
  status: { ...(over.failed === undefined ? {} : { failed: over.failed }), ...(over.conditions ? { conditions: over.conditions } : {}) },
});

type State = k8s.V1ContainerState;
const pod = (name: string, parts: { main?: State; sync?: State; keeper?: State; scheduled?: k8s.V1PodCondition; deleting?: boolean; created?: string } = {}): k8s.V1Pod => ({
  metadata: { name, creationTimestamp: new Date(parts.created ?? '2026-11-22T09:59:00Z'), ...(parts.deleting ? { deletionTimestamp: new Date(NOW) } : {}) },
  status: {
    phase: 'Pending',
    conditions: [parts.scheduled ?? { type: 'PodScheduled', status: 'True' }],
    ...(parts.sync ? { initContainerStatuses: [{ name: 'qwex-sync', image: 'busybox', imageID: '', ready: false, restartCount: 0, state: parts.sync }] } : {}),
    containerStatuses: [
      ...(parts.main ? [{ name: 'main', image: 'busybox', imageID: '', ready: false, restartCount: 0, state: parts.main }] : []),
      ...(parts.keeper ? [{ name: 'qwex-keeper', image: 'busybox', imageID: '', ready: false, restartCount: 0, state: parts.keeper }] : []),
    ],
  },
});

const seen = (j: k8s.V1Job | undefined, pods: k8s.V1Pod[] = [], over: Partial<Observed> = {}): Observed => ({ job: j, pods, now: NOW, ...over });
const running: State = { running: { startedAt: new Date(NOW - 5000) } };
const waitingFor = (reason: string, message?: string): State => ({ waiting: { reason, ...(message ? { message } : {}) } });
const ended = (exitCode: number, extra: Partial<k8s.V1ContainerStateTerminated> = {}): State => ({ terminated: { exitCode, finishedAt: new Date(NOW - 1000), ...extra } });

describe('decide: waiting for admission and for the pod (pending, never running)', () => {
  it('a suspended Job is queued, with the queue\'s reason and place; nothing else is done', () => {
    const actions = decide(seen(job({ suspend: true }), [], { queue: { reason: 'Pending', message: 'insufficient quota', position: 2 } }), known());
    expect(actions).toEqual([{ type: 'phase', phase: 'queued', reason: 'Pending', message: 'insufficient quota', position: 2 }]);
  });

  it('a Job suspended again after its pod was admitted is an eviction (an attempt), not the end', () => {
    const actions = decide(seen(job({ suspend: true }), [], { queue: { reason: 'Preempted' } }), known({ admittedPod: 'p1' }));
    expect(actions[0]).toEqual({ type: 'evicted', pod: 'p1' });
    expect(actions).toContainEqual(expect.objectContaining({ type: 'phase', phase: 'queued', reason: 'Preempted' }));
    expect(actions.some((a) => a.type === 'end')).toBe(false);
  });

  it('an inadmissible workload is noted, then fails the run once it has lasted the pending timeout', () => {
    const q = { queue: { reason: 'Inadmissible', message: 'ClusterQueue gone', inadmissible: true } };
    expect(decide(seen(job({ suspend: true }), [], q), known())).toContainEqual({ type: 'problem', key: 'inadmissible', since: NOW });
    expect(decide(seen(job({ suspend: true }), [], q), known({ problemSince: { inadmissible: NOW - 1000 } })).some((a) => a.type === 'fail')).toBe(false);
    expect(decide(seen(job({ suspend: true }), [], q), known({ problemSince: { inadmissible: NOW - 300_000 } }))).toContainEqual({ type: 'fail', error: { code: 'QWEX_K8S_INADMISSIBLE', message: 'Kueue cannot admit the workload: ClusterQueue gone' } });
  });

  it('no pod yet, a pod initialising, a workspace being sent: pending, and `started` is never said', () => {
    expect(decide(seen(job()), known())).toEqual([{ type: 'phase', phase: 'pending', reason: 'NoPod', message: 'waiting for the Job controller to create the pod' }]);
    const initialising = decide(seen(job(), [pod('p1', { sync: waitingFor('PodInitializing'), main: waitingFor('PodInitializing') })]), known());
    expect(initialising).toEqual([{ type: 'admitted', pod: 'p1' }, { type: 'phase', phase: 'pending', reason: 'PodInitializing', message: undefined }]);
    const syncing = decide(seen(job(), [pod('p1', { sync: running, main: waitingFor('PodInitializing') })]), known({ admittedPod: 'p1' }));
    expect(syncing).toEqual([{ type: 'phase', phase: 'pending', reason: 'Syncing', message: 'sending the workspace to the pod' }, { type: 'upload', pod: 'p1' }]);
    // Once it is there, no second upload.
    const synced = decide(seen(job(), [pod('p1', { sync: running, main: waitingFor('PodInitializing') })]), known({ admittedPod: 'p1', synced: ['p1'] }));
    expect(synced.some((a) => a.type === 'upload')).toBe(false);
    for (const actions of [initialising, syncing, synced]) expect(actions.some((a) => a.type === 'started')).toBe(false);
  });

  it('an unschedulable pod is shown with the scheduler\'s words, then fails the run once it lasts', () => {
    const unschedulable = pod('p1', { scheduled: { type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/3 nodes are available' } });
    expect(decide(seen(job(), [unschedulable]), known({ admittedPod: 'p1' }))).toEqual([
      { type: 'phase', phase: 'pending', reason: 'Unschedulable', message: '0/3 nodes are available' },
      { type: 'problem', key: 'unschedulable:p1', since: NOW },
    ]);
    expect(decide(seen(job(), [unschedulable]), known({ admittedPod: 'p1', problemSince: { 'unschedulable:p1': NOW - 300_000 } }))).toContainEqual({
      type: 'fail',
      error: { code: 'QWEX_K8S_UNSCHEDULABLE', message: 'the pod cannot be scheduled: 0/3 nodes are available' },
    });
  });

  it('an image that cannot be pulled fails with the pull\'s own error, not the back-off that follows it (issue 13 item 5)', () => {
    const pulling = pod('p1', { main: waitingFor('ErrImagePull', 'failed to pull "x": pull access denied') });
    expect(decide(seen(job(), [pulling]), known({ admittedPod: 'p1' }))).toContainEqual({ type: 'pull-error', pod: 'p1', message: 'failed to pull "x": pull access denied' });
    const backOff = pod('p1', { main: waitingFor('ImagePullBackOff', 'Back-off pulling image "x"') });
    const later = decide(seen(job(), [backOff]), known({ admittedPod: 'p1', pullErrors: { p1: 'failed to pull "x": pull access denied' }, problemSince: { 'waiting:p1': NOW - 300_000 } }));
    expect(later).toContainEqual({ type: 'phase', phase: 'pending', reason: 'ImagePullBackOff', message: 'failed to pull "x": pull access denied' });
    expect(later).toContainEqual({ type: 'fail', error: { code: 'QWEX_IMAGE_PULL_FAILED', message: 'ErrImagePull: failed to pull "x": pull access denied' } });
  });

  it('a problem that went away is forgotten', () => {
    const actions = decide(seen(job(), [pod('p1', { main: waitingFor('ContainerCreating') })]), known({ admittedPod: 'p1', problemSince: { 'waiting:p1': NOW - 1000 } }));
    expect(actions).toContainEqual({ type: 'problems-cleared' });
  });
});

describe('decide: running and the end', () => {
  it('the command\'s container running: started, running, its log followed, the keeper\'s lease renewed (with sync)', () => {
    const p = pod('p1', { sync: ended(0), main: running, keeper: running });
    expect(decide(seen(job(), [p]), known({ admittedPod: 'p1', synced: ['p1'] }))).toEqual([
      { type: 'started', pod: 'p1' },
      { type: 'phase', phase: 'running' },
      { type: 'follow-log', pod: 'p1' },
      { type: 'renew-lease', pod: 'p1' },
    ]);
    expect(decide(seen(job(), [pod('p1', { main: running })]), known({ admittedPod: 'p1', sync: false })).some((a) => a.type === 'renew-lease')).toBe(false);
  });

  it('the command\'s container ended: the end, with its exit code, after its log', () => {
    const actions = decide(seen(job(), [pod('p1', { main: ended(3), keeper: running })]), known({ admittedPod: 'p1' }));
    expect(actions).toEqual([{ type: 'started', pod: 'p1' }, { type: 'end', exit: { exitCode: 3, signal: null, endedAt: new Date(NOW - 1000) }, logOf: 'p1' }]);
  });

  it('a command the runtime cannot execute ends with 127 and never counts as started; OOMKilled says so', () => {
    const notFound = decide(seen(job(), [pod('p1', { main: ended(128, { reason: 'StartError', message: 'exec: "nope": executable file not found in $PATH' }) })]), known());
    expect(notFound).toEqual([{ type: 'end', exit: expect.objectContaining({ exitCode: 127, error: expect.objectContaining({ code: 'QWEX_COMMAND_NOT_FOUND' }) }), logOf: 'p1' }]);
    expect(exitOf({ exitCode: 137, reason: 'OOMKilled' }, 'busybox')).toMatchObject({ exitCode: 137, error: { code: 'QWEX_OUT_OF_MEMORY' } });
  });

  it('a failed attempt with retries left is recorded once, and is not the end', () => {
    const failed = pod('p1', { main: ended(2, { startedAt: new Date(NOW - 3000) }), keeper: running });
    const first = decide(seen(job({ failed: 0 }), [failed]), known({ retries: 1 }));
    expect(first).toEqual([{ type: 'retried', attempt: { pod: 'p1', startedAt: new Date(NOW - 3000).toISOString(), endedAt: new Date(NOW - 1000).toISOString(), reason: 'Failed', message: 'exit code 2; Kubernetes retries (retries: 1)' } }, { type: 'let-go', pod: 'p1' }]);
    // Recorded once; while its keeper runs on (the let-go was lost), it is let go again; once the keeper is gone, nothing.
    const recorded = known({ retries: 1, attempts: [{ pod: 'p1', endedAt: '', reason: 'Failed' }] });
    expect(decide(seen(job({ failed: 0 }), [failed]), recorded)).toEqual([{ type: 'let-go', pod: 'p1' }]);
    const gone = pod('p1', { main: ended(2, { startedAt: new Date(NOW - 3000) }), keeper: ended(0) });
    expect(decide(seen(job({ failed: 0 }), [gone]), recorded)).toEqual([]);
    expect(decide(seen(job({ failed: 0 }), [failed]), known({ ...recorded, sync: false }))).toEqual([]);
    // The last allowed attempt's exit code is the run's.
    expect(decide(seen(job({ failed: 1 }), [failed]), known({ retries: 1 }))).toContainEqual(expect.objectContaining({ type: 'end', exit: expect.objectContaining({ exitCode: 2 }) }));
  });

  it('a pod deleted while nobody asked to stop (an eviction) is not the command\'s end; while stopping it is', () => {
    const deleting = pod('p1', { main: ended(143), deleting: true });
    expect(decide(seen(job({ suspend: true }), [deleting]), known({ admittedPod: 'p1' })).some((a) => a.type === 'end')).toBe(false);
    expect(decide(seen(job(), [deleting]), known({ stopping: true }))).toContainEqual(expect.objectContaining({ type: 'end', exit: expect.objectContaining({ exitCode: 143 }) }));
  });

  it('while stopping, a command still running is waited for: nothing is decided', () => {
    expect(decide(seen(job(), [pod('p1', { main: running, keeper: running })]), known({ stopping: true, admittedPod: 'p1' }))).toEqual([]);
  });

  it('the Job gone: lost if nobody stopped it; stopped, the end once its pods are gone', () => {
    expect(decide(seen(undefined, []), known())).toEqual([{ type: 'end', exit: { exitCode: null, signal: null, lost: 'its Job qwex-r1 was deleted in namespace ml before the command\'s end was seen' } }]);
    expect(decide(seen(undefined, [pod('p1', { main: running, deleting: true })]), known({ stopping: true }))).toEqual([]);
    expect(decide(seen(undefined, []), known({ stopping: true }))).toEqual([{ type: 'end', exit: { exitCode: null, signal: 'SIGTERM' } }]);
  });

  it('a Job that failed without the command ending ends the run with the Job\'s reason', () => {
    const failed = job({ conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded', message: 'Job was active longer than specified deadline' }] });
    expect(decide(seen(failed, []), known())).toEqual([{ type: 'end', exit: { exitCode: null, signal: null, error: { code: 'QWEX_K8S_JOB_FAILED', message: 'the Job failed before the command ended: DeadlineExceeded: Job was active longer than specified deadline' } } }]);
  });

  it('the newest pod is the one looked at (an evicted pod\'s successor), by creation time', () => {
    const older = pod('p1', { created: '2026-11-21T23:59:59Z' });
    const newer = pod('p2', { created: '2026-11-22T00:00:01Z' });
    expect(newest([newer, older])?.metadata?.name).toBe('p2');
  });
});
