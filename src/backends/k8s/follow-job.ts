import { existsSync } from 'node:fs';
import type { ArtifactManifest } from '../../workspace/artifacts.js';
import { ErrorCode } from '../../errors.js';
import type { Job, RunError } from '../../run/model.js';
import { FollowStoppedError, followUntilExit, type FollowContext } from '../follow-until-exit.js';
import type { ExitInfo, StartedProcess } from '../types.js';
import type { Admission, QueueView } from './admission.js';
import { statusOf, type Cluster } from './cluster.js';
import { containerRunning, decide, mainState, newest, type Action, type Attempt, type Known, type Phase } from './decide.js';
import { collectOut, letGo, nothingToCollect, renewLease, signalCommand } from './keeper.js';
import { PodLogs } from './log-copy.js';
import { DEFAULT_ARTIFACT_TIMEOUT_S, DEFAULT_PENDING_TIMEOUT_S, KEEPER_CONTAINER, LABEL_RUN_ID, type KubernetesOptions } from './manifest.js';
import { JobWatch } from './observe.js';
import { uploadWorkspace } from './upload.js';
import type { Progress } from '../../progress.js';

/** Between looks at a queue (its conditions and place) while the Job waits. */
const QUEUE_POLL_MS = 2000;
/** Before connecting again to an API that did not answer. */
const RETRY_MS = 1000;
/** The longest wait between two looks when nothing changes (a lease to renew, a timeout to notice). */
const TICK_MS = 1000;
/** How long a log stream may stay open after its container ended before it is cut and read again. */
const LOG_END_GRACE_MS = 5000;
/** Before a failed attempt's keeper is told again to let its pod go (it had not exited). */
const LET_GO_AGAIN_MS = 3000;
/** How long signalling the command through the keeper may take before the Job is deleted instead (a node that does not answer). */
const SIGNAL_EXEC_MS = 10_000;

/** What the follower of one run's Job needs. `details` is the run's `backend` record, kept up to date here. */
export interface JobTarget {
  getCluster(): Promise<Cluster>;
  details: Record<string, unknown>;
  runDir: string;
  runId: string;
  job: Job;
  options: KubernetesOptions;
  admission: Admission;
  /** Where the workspace upload reports how far it is. */
  progress?: Progress;
}

/**
 * Follows a run's Job as a reconciler: it observes (observe.ts: informers
 * on the Job and its pods; the admission's queue while suspended), decides
 * (decide.ts, pure) and acts: sends the workspace (upload.ts), copies the
 * log (log-copy.ts), renews the keeper's lease, records what the cluster
 * did (phase, attempts) in the run's details, and learns the end. A stop
 * signals the command through the keeper, so that it can write its
 * checkpoint and the keeper holds the pod until out/ is home; the Job is
 * deleted once the run is recorded (release).
 */
export function followJob(t: JobTarget): StartedProcess {
  const { details, options } = t;
  const name = String(details.job);
  const sync = options.sync !== false;
  const leaseMs = Math.min(30_000, ((options.artifact_timeout_seconds ?? DEFAULT_ARTIFACT_TIMEOUT_S) * 1000) / 3);
  const known: Known = {
    jobName: name,
    namespace: String(details.namespace),
    image: t.job.container?.image ?? '',
    sync,
    retries: options.retries ?? 0,
    pendingTimeoutMs: (options.pending_timeout_seconds ?? DEFAULT_PENDING_TIMEOUT_S) * 1000,
    stopping: false,
    attempts: Array.isArray(details.attempts) ? (details.attempts as Attempt[]) : [],
    admittedPod: undefined,
    synced: [],
    problemSince: {},
    pullErrors: {},
  };
  const listeners = new Set<(patch: Record<string, unknown>) => void>();
  const uploads = new AbortController();
  const uploading = new Set<string>();
  /** Pods of failed attempts whose keeper was told to exit, and when. */
  const toldToGo = new Map<string, number>();
  let cluster: Cluster | undefined;
  let watch: JobWatch | undefined;
  let logs: PodLogs | undefined;
  let queue: QueueView | undefined;
  let reported: string | undefined;
  let lastLease = 0;
  let collected = false;
  /** Set by work done beside the loop: an end it learnt (a failed upload), or a failure the follow cannot survive. */
  let endedBeside: ExitInfo | undefined;
  let fatal: unknown;
  // Something changed (an event, work done beside the loop): the loop looks again at once.
  let dirty = false;
  let resume: (() => void) | undefined;
  const wake = (): void => {
    dirty = true;
    resume?.();
  };
  let markStarted!: () => void;
  const running = new Promise<void>((resolve) => (markStarted = resolve));
  let started = false;

  const jobUid = (): string | undefined => (typeof details.jobUid === 'string' ? details.jobUid : undefined);
  const connect = async (): Promise<Cluster> => (cluster ??= await t.getCluster());
  const report = (patch: Record<string, unknown>): void => {
    Object.assign(details, patch);
    for (const l of listeners) l(patch);
  };
  const setPhase = (phase: Phase, reason?: string, message?: string, position?: number): void => {
    const key = JSON.stringify([phase, reason, message, position]);
    if (key === reported) return;
    reported = key;
    report({ phase, waiting: phase === 'running' ? null : { reason: reason ?? null, message: message ?? null, position: position ?? null } });
  };
  /** Work beside the loop: its failure is fatal only when the run directory went (the log file cannot be written). */
  const beside = (work: Promise<unknown>): void => {
    work.catch((error: unknown) => {
      if (!existsSync(t.runDir)) fatal ??= error;
    }).finally(() => wake());
  };
  const deleteJob = async (graceSeconds?: number): Promise<void> => {
    const c = await connect().catch(() => undefined);
    if (!c) return;
    await c.batch
      .deleteNamespacedJob({ name, namespace: c.namespace, propagationPolicy: 'Background', ...(graceSeconds === undefined ? {} : { gracePeriodSeconds: graceSeconds }) })
      .catch(() => {
        // gone already, or the API is away: `qwex doctor` lists what is left
      });
  };
  const currentPod = (): ReturnType<typeof newest> => (watch ? newest(watch.podsOf(jobUid())) : undefined);

  const upload = (pod: string): void => {
    if (uploading.has(pod) || !cluster) return;
    if (!t.job.workspace) {
      endedBeside ??= { exitCode: null, signal: null, error: { code: ErrorCode.Internal, message: 'a k8s run that syncs was recorded without its workspace snapshot' } };
      return wake();
    }
    uploading.add(pod);
    beside(
      uploadWorkspace(cluster, pod, t.job.workspace, uploads.signal, t.progress)
        .then((error: RunError | undefined) => {
          if (error) endedBeside ??= { exitCode: null, signal: null, error };
          else known.synced = [...known.synced, pod];
        })
        .finally(() => uploading.delete(pod)),
    );
  };

  /** Carries out what decide() said; resolves with the end once it is known (and the log copied). */
  const act = async (actions: Action[]): Promise<ExitInfo | undefined> => {
    const c = cluster!;
    for (const a of actions) {
      switch (a.type) {
        case 'phase':
          setPhase(a.phase, a.reason, a.message, a.position);
          break;
        case 'started':
          if (!started) {
            started = true;
            markStarted();
          }
          break;
        case 'admitted':
          known.admittedPod = a.pod;
          break;
        case 'evicted': {
          // It ran and was suspended again: the queue evicted or preempted it. That is an attempt, not the end.
          const why = await t.admission.eviction(c, String(jobUid())).catch(() => undefined);
          known.attempts = [...known.attempts, { pod: a.pod, endedAt: new Date().toISOString(), reason: why?.reason ?? 'Suspended', ...(why?.message ? { message: why.message } : {}) }];
          known.admittedPod = undefined;
          report({ attempts: known.attempts });
          break;
        }
        case 'retried':
          known.attempts = [...known.attempts, a.attempt];
          report({ attempts: known.attempts });
          beside(logs!.follow(a.attempt.pod));
          break;
        case 'let-go': {
          // Its out/ is not collected: the pod goes, so that the Job controller starts the next one. Asked again (while
          // the keeper runs on) once LET_GO_AGAIN_MS has passed, not at every look.
          const last = toldToGo.get(a.pod);
          if (last !== undefined && Date.now() - last < LET_GO_AGAIN_MS) break;
          toldToGo.set(a.pod, Date.now());
          void letGo(c, a.pod).catch(() => false);
          break;
        }
        case 'problem':
          known.problemSince = { ...known.problemSince, [a.key]: a.since };
          break;
        case 'problems-cleared':
          known.problemSince = {};
          break;
        case 'pull-error':
          known.pullErrors = { ...known.pullErrors, [a.pod]: a.message };
          break;
        case 'upload':
          upload(a.pod);
          break;
        case 'follow-log':
          beside(logs!.follow(a.pod));
          break;
        case 'renew-lease':
          if (Date.now() - lastLease >= leaseMs) {
            lastLease = Date.now();
            if (containerRunning(watch?.pod(a.pod), KEEPER_CONTAINER)) void renewLease(c, a.pod).catch(() => {});
          }
          break;
        case 'fail':
          await deleteJob(0);
          return { exitCode: null, signal: null, error: a.error };
        case 'end':
          if (a.logOf !== undefined) {
            // The API ends a follow stream once the container has ended; one still open after that is cut and read again.
            const pod = a.logOf;
            const cut = setTimeout(() => logs!.cut(pod), LOG_END_GRACE_MS);
            try {
              await logs!.follow(pod);
            } finally {
              clearTimeout(cut);
            }
          }
          return a.exit;
      }
    }
    return undefined;
  };

  const followToEnd = async (ctx: FollowContext): Promise<ExitInfo> => {
    const c = await ctx.retry(connect, RETRY_MS);
    watch = new JobWatch(c, t.runId, () => wake());
    logs = new PodLogs(c, t.runDir, (pod) => {
      const p = watch?.pod(pod);
      return { terminated: mainState(p)?.terminated !== undefined, gone: p === undefined };
    }, ctx.signal);
    let lastPoll = 0;
    for (;;) {
      if (!dirty) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, TICK_MS);
          resume = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      resume = undefined;
      dirty = false;
      if (ctx.signal.aborted) throw new FollowStoppedError();
      if (fatal !== undefined) throw fatal;
      if (endedBeside) return endedBeside;
      const seen = watch.snapshot(name, jobUid());
      if (!seen) continue;
      try {
        if (seen.job?.spec?.suspend && !known.stopping && Date.now() - lastPoll >= QUEUE_POLL_MS) {
          lastPoll = Date.now();
          queue = (await t.admission.observe(c, String(seen.job.metadata?.uid ?? jobUid()), options).catch(() => queue)) ?? queue;
        }
        const exit = await act(decide({ ...seen, queue, now: Date.now() }, known));
        if (exit) return exit;
      } catch (error) {
        // The run directory went (its log cannot be written): the follow cannot go on.
        if (ctx.signal.aborted || !existsSync(t.runDir)) throw error;
        // Otherwise a passing API failure: the next event or tick looks again.
      }
    }
  };

  /** Stops the command: through the keeper where it can (the pod stays for out/), else by deleting the Job (the node stops the pod). */
  const stopCommand = async (signal: NodeJS.Signals): Promise<void> => {
    known.stopping = true;
    uploads.abort(new FollowStoppedError());
    const pod = currentPod();
    if (sync && pod && !pod.metadata?.deletionTimestamp && mainState(pod)?.running && containerRunning(pod, KEEPER_CONTAINER)) {
      const c = await connect().catch(() => undefined);
      if (c && (await signalCommand(c, pod.metadata!.name!, t.runId, signal, AbortSignal.timeout(SIGNAL_EXEC_MS)).catch(() => false))) return;
    }
    // The Job goes with its pods (the API's default for Jobs would orphan them); the node sends
    // SIGTERM and, after the pod's grace period, SIGKILL. A later SIGKILL asks for no grace.
    await deleteJob(signal === 'SIGKILL' ? 0 : undefined);
  };

  return followUntilExit({
    details,
    runDir: t.runDir,
    running,
    followToEnd,
    hasEnded: async () => {
      const c = await connect();
      const j = await c.batch.readNamespacedJob({ name, namespace: c.namespace }).catch((error: unknown) => {
        if (statusOf(error) === 404) return undefined;
        throw error;
      });
      if (!j) return true;
      const list = await c.core.listNamespacedPod({ namespace: c.namespace, labelSelector: `${LABEL_RUN_ID}=${t.runId}` });
      return mainState(newest(list.items))?.terminated !== undefined;
    },
    signal: (signal) => {
      void stopCommand(signal).finally(() => wake());
    },
    collectArtifacts: async (target): Promise<ArtifactManifest> => {
      if (!sync) throw new Error('with sync off the workspace lives only in the image, so out/ is not collected');
      // A command that never ran wrote nothing: there is nothing to bring home, and nothing failed.
      if (!started) return nothingToCollect(target);
      const pod = currentPod();
      const c = await connect();
      if (!pod || !containerRunning(pod, KEEPER_CONTAINER)) {
        const keeper = pod?.status?.containerStatuses?.find((s) => s.name === KEEPER_CONTAINER);
        if (pod && keeper?.state?.terminated && !pod.metadata?.deletionTimestamp) {
          throw new Error(`the pod finished before qwex collected out/: its keeper let it go when its lease of ${options.artifact_timeout_seconds ?? DEFAULT_ARTIFACT_TIMEOUT_S} s ran out with no qwex process watching the run`);
        }
        throw new Error('the pod was deleted before qwex collected out/');
      }
      const manifest = await collectOut(c, pod.metadata!.name!, target);
      collected = await letGo(c, pod.metadata!.name!).catch(() => false);
      return manifest;
    },
    release: async () => {
      const pod = currentPod();
      const c = await connect().catch(() => undefined);
      if (pod && sync && !collected && c) await letGo(c, pod.metadata!.name!).catch(() => false);
      if (!options.keep_jobs && options.ttl_seconds_after_finished === undefined) await deleteJob();
    },
    close: () => {
      uploads.abort(new FollowStoppedError());
      watch?.stop();
      logs?.close();
      listeners.clear();
      wake();
    },
    onDetails: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  });
}
