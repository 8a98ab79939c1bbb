import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import type * as k8s from '@kubernetes/client-node';
import type { ArtifactManifest } from '../../workspace/artifacts.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { apiMessage, clusterError, connectCluster, statusOf, type Cluster } from './cluster.js';
import { apiGet, apiGetJson } from './http.js';
import { TimestampedLogCopy, readCursor, resumeSince } from './log-cursor.js';
import {
  CONTROL_MOUNT,
  DEFAULT_ARTIFACT_TIMEOUT_S,
  DEFAULT_PENDING_TIMEOUT_S,
  KEEPER_CONTAINER,
  LABEL_RUN_ID,
  MAIN_CONTAINER,
  SYNC_CONTAINER,
  WORKSPACE_MOUNT,
  jobManifest,
  jobName,
  type KubernetesOptions,
} from './manifest.js';
import { RunFiles } from '../../paths.js';
import { readRunRecord } from '../../store/run-record.js';
import type { Job, RunError } from '../../run/model.js';
import { shellQuote } from '../shell-quote.js';
import { ContentStore } from '../../workspace/snapshot.js';
import { packToBuffer, packWatchedCommand, receiveArtifacts } from '../tar-transfer.js';
import { notStartedProcess, type Backend, type ExitInfo, type RunIO, type StartedProcess } from '../types.js';

const KUEUE_GROUP = 'kueue.x-k8s.io';
const KUEUE_VERSION = 'v1beta1';
/** Between looks at a Kueue workload (its conditions and place in the queue) while the Job waits. */
const QUEUE_POLL_MS = 2000;
/** Before retrying a dropped watch, log stream or exec. */
const RETRY_MS = 1000;
/** How long a log stream may stay open after its container ended before it is cut and read again. */
const LOG_END_GRACE_MS = 5000;
/** The cursor of the log copy, beside the logs in the run directory. */
const LOG_CURSOR = 'k8s-log-cursor.json';

/**
 * Runs the command as a batch/v1 Job on a Kubernetes cluster (see
 * k8s/manifest.ts for the pod's shape). The API server is the daemon of
 * record: the Job runs on if qwex goes away, and `adopt` finds it again by
 * name. Whoever supervises the run watches the Job and its pods (list by
 * the run-id label, then watch from the list's resourceVersion; a dropped
 * watch resumes from the last one seen, a 410 Gone relists), streams the
 * workspace snapshot into the pod over exec, copies the log into stdout.log
 * (by timestamp cursor: nothing lost or doubled across drops and restarts),
 * and learns the end from the main container's terminated state. The kueue
 * backend (kueue.ts) is the same with a queue.
 */
export class KubernetesBackend implements Backend {
  readonly name: string = 'k8s';
  readonly outputNeedsSupervisor = true;
  readonly runsRemotely = true;

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const options = this.options(job);
    const cluster = await connectCluster(options);
    await checkNamespace(cluster);
    if (options.queue !== undefined) await checkLocalQueue(cluster, options.queue);
    const body = jobManifest({ runId: io.runId, project: io.project, job, cwd: job.workspace?.cwd ?? '', options });
    let created: k8s.V1Job;
    try {
      created = await cluster.batch.createNamespacedJob({ namespace: cluster.namespace, body: body as k8s.V1Job });
    } catch (error) {
      throw clusterError(error, cluster, { verb: 'create', resource: 'jobs' });
    }
    const details = {
      context: cluster.context,
      namespace: cluster.namespace,
      job: created.metadata?.name ?? jobName(io.runId),
      jobUid: created.metadata?.uid,
      ...(options.queue === undefined ? {} : { queue: options.queue, phase: 'queued' }),
    };
    return followJob(() => Promise.resolve(cluster), details, io.dir, io.runId, job, options);
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    if (typeof details.job !== 'string' || typeof details.namespace !== 'string') {
      return notStartedProcess({ exitCode: null, signal: null, lost: 'its record names no Kubernetes Job' });
    }
    let job: Job;
    let runId: string;
    try {
      ({ job, id: runId } = readRunRecord(dir));
    } catch (error) {
      return notStartedProcess({ exitCode: null, signal: null, lost: `its record cannot be read: ${(error as Error).message}` });
    }
    const options = { ...this.options(job), namespace: details.namespace, ...(typeof details.context === 'string' ? { context: details.context } : {}) };
    let cluster: Promise<Cluster> | undefined;
    const getCluster = (): Promise<Cluster> => (cluster ??= connectCluster(options).catch((error: unknown) => {
      cluster = undefined;
      throw error;
    }));
    return followJob(getCluster, details, dir, runId, job, options);
  }

  /** The backend's options as recorded with the job; the kueue backend adds and checks its queue. */
  protected options(job: Job): KubernetesOptions {
    const { queue: _queue, ...rest } = job.backendOptions as KubernetesOptions;
    return rest;
  }
}

async function checkNamespace(cluster: Cluster): Promise<void> {
  try {
    await cluster.core.readNamespace({ name: cluster.namespace });
  } catch (error) {
    if (statusOf(error) === 404) {
      throw new QwexError(ErrorCode.BackendUnavailable, `namespace ${cluster.namespace} does not exist in context ${cluster.context}`, {
        hint: `create it (kubectl create namespace ${cluster.namespace}), or pass --namespace`,
      });
    }
    // Many users may not read namespaces: that is no reason not to try creating the Job.
    if (statusOf(error) === 403) return;
    throw clusterError(error, cluster, { verb: 'get', resource: 'namespaces' });
  }
}

/**
 * A missing LocalQueue fails the run before anything is created. A cluster
 * without Kueue's API at all is allowed (something else may admit suspended
 * Jobs): the record says so while the Job waits.
 */
async function checkLocalQueue(cluster: Cluster, queue: string): Promise<void> {
  try {
    await cluster.custom.getNamespacedCustomObject({ group: KUEUE_GROUP, version: KUEUE_VERSION, namespace: cluster.namespace, plural: 'localqueues', name: queue });
  } catch (error) {
    if (statusOf(error) === 404) {
      if (noKueueApi(error)) return;
      throw new QwexError(ErrorCode.BackendUnavailable, `LocalQueue ${queue} does not exist in namespace ${cluster.namespace}`, {
        hint: `ask for one (kubectl get localqueues -n ${cluster.namespace} lists those there), or pass --queue NAME`,
      });
    }
    if (statusOf(error) === 403) return; // may not read LocalQueues: Kueue itself will say if it is missing
    throw clusterError(error, cluster, { verb: 'get', resource: 'localqueues' });
  }
}

/** The API server answers 404 with this when a whole resource type (here Kueue's CRDs) is not installed. */
function noKueueApi(error: unknown): boolean {
  return statusOf(error) === 404 && /could not find the requested resource|404 page not found/i.test(apiMessage(error) ?? '');
}

type Pod = k8s.V1Pod;

interface Attempt {
  pod: string;
  startedAt?: string;
  endedAt: string;
  reason: string;
  message?: string;
}

/** Where a cluster run stands (run.backend.phase): waiting in Kueue's queue, a pod not running yet, or running. */
type Phase = 'queued' | 'pending' | 'running';

function followJob(getCluster: () => Promise<Cluster>, details: Record<string, unknown>, dir: string, runId: string, job: Job, options: KubernetesOptions): StartedProcess {
  const name = String(details.job);
  const stdoutPath = join(dir, RunFiles.stdout);
  const cursorPath = join(dir, LOG_CURSOR);
  const sync = options.sync !== false;
  const pendingTimeoutMs = (options.pending_timeout_seconds ?? DEFAULT_PENDING_TIMEOUT_S) * 1000;
  const leaseMs = Math.min(30_000, ((options.artifact_timeout_seconds ?? DEFAULT_ARTIFACT_TIMEOUT_S) * 1000) / 3);
  const selector = `${LABEL_RUN_ID}=${runId}`;

  let disposed = false;
  let stopping = false;
  let result: ExitInfo | undefined;
  let settle!: (info: ExitInfo) => void;
  const exited = new Promise<ExitInfo>((resolve) => (settle = resolve));
  const listeners = new Set<(patch: Record<string, unknown>) => void>();
  const cleanups: (() => void)[] = [];
  let wake: () => void = () => {};
  let cluster: Cluster | undefined;
  let jobs: (k8s.Informer<k8s.V1Job> & k8s.ObjectCache<k8s.V1Job>) | undefined;
  let pods: (k8s.Informer<Pod> & k8s.ObjectCache<Pod>) | undefined;
  let listed = { jobs: false, pods: false };

  const known: { phase?: Phase; reason?: string; message?: string; position?: number; attempts: Attempt[] } = {
    attempts: Array.isArray(details.attempts) ? (details.attempts as Attempt[]) : [],
  };
  const report = (patch: Record<string, unknown>): void => {
    Object.assign(details, patch);
    for (const l of listeners) l(patch);
  };
  const setPhase = (phase: Phase, reason?: string, message?: string, position?: number): void => {
    if (known.phase === phase && known.reason === reason && known.message === message && known.position === position) return;
    Object.assign(known, { phase, reason, message, position });
    report({ phase, waiting: phase === 'running' ? null : { reason: reason ?? null, message: message ?? null, position: position ?? null } });
  };

  const finish = (info: ExitInfo): void => {
    if (result) return;
    result = info;
    settle(info);
  };

  const problemSince = new Map<string, number>();
  let givingUp = false;
  /** A pending problem (image pull, unschedulable, inadmissible) that fails the run once it has lasted the pending timeout. */
  const problem = (key: string, error: RunError): void => {
    const since = problemSince.get(key) ?? Date.now();
    problemSince.set(key, since);
    if (Date.now() - since < pendingTimeoutMs || givingUp) return;
    givingUp = true;
    void deleteJob(0).finally(() => finish({ exitCode: null, signal: null, error }));
  };

  const deleteJob = async (graceSeconds?: number): Promise<void> => {
    const c = cluster ?? (await getCluster().catch(() => undefined));
    if (!c) return;
    await c.batch
      .deleteNamespacedJob({ name, namespace: c.namespace, propagationPolicy: 'Background', ...(graceSeconds === undefined ? {} : { gracePeriodSeconds: graceSeconds }) })
      .catch(() => {});
  };

  // Per pod: the workspace sent once, the log copied once to its end, the end of main.
  const synced = new Set<string>();
  const syncing = new Set<string>();
  const logging = new Map<string, Promise<void>>();
  /** The open log stream of each pod, to cut one that outlives its container (a silently dead connection). */
  const streams = new Map<string, () => void>();
  let lastLease = 0;
  let collected = false;
  let admittedPod: string | undefined;

  const exec = async (pod: string, container: string, command: string[], stdin?: Buffer, onStdout?: (chunk: Buffer) => void): Promise<{ code: number; stderr: string }> => {
    const c = cluster!;
    const stderr: Buffer[] = [];
    const out = new Writable({ write: (chunk: Buffer, _e, cb) => (onStdout?.(chunk), cb()) });
    const err = new Writable({ write: (chunk: Buffer, _e, cb) => (stderr.push(chunk), cb()) });
    return new Promise((resolve, reject) => {
      let status: k8s.V1Status | undefined;
      new c.lib.Exec(c.config)
        .exec(c.namespace, pod, container, command, out, err, stdin ? Readable.from([stdin]) : null, false, (s) => (status = s))
        .then((ws) => {
          ws.on('close', () => {
            if (!status) return reject(new Error(`the exec in ${pod}/${container} was cut off`));
            const causes = (status.details?.causes ?? []) as { reason?: string; message?: string }[];
            const code = status.status === 'Success' ? 0 : Number(causes.find((x) => x.reason === 'ExitCode')?.message ?? 1);
            resolve({ code, stderr: Buffer.concat(stderr).toString('utf8') || (status.message ?? '') });
          });
          ws.on('error', () => {});
        }, reject);
    });
  };

  const uploadWorkspace = async (pod: string): Promise<void> => {
    if (synced.has(pod) || syncing.has(pod)) return;
    syncing.add(pod);
    try {
      if (!job.workspace) throw new QwexError(ErrorCode.Internal, 'a k8s run that syncs was recorded without its workspace snapshot');
      const store = new ContentStore();
      const tar = await packToBuffer(store, store.readManifest(job.workspace.manifest));
      const cwd = job.workspace.cwd ? `${WORKSPACE_MOUNT}/${job.workspace.cwd}` : WORKSPACE_MOUNT;
      const script = syncScript(tar.length, cwd);
      for (let attempt = 1; ; attempt++) {
        try {
          const r = await exec(pod, SYNC_CONTAINER, ['sh', '-c', script], tar);
          if (r.code === 0) break;
          if (r.code !== SYNC_CUT_SHORT || attempt >= 3) {
            return finish({ exitCode: null, signal: null, error: { code: ErrorCode.SyncFailed, message: `the workspace could not be unpacked in pod ${pod} (the image needs sh, head and tar): ${r.stderr.trim().split('\n')[0]}` } });
          }
        } catch (error) {
          if (attempt >= 3 || disposed) throw error;
        }
        await sleep(RETRY_MS);
      }
      synced.add(pod);
    } catch (error) {
      if (/\b403\b/.test(String((error as Error).message))) {
        finish({ exitCode: null, signal: null, error: { code: ErrorCode.SyncFailed, message: `forbidden: you may not create pods/exec in namespace ${cluster?.namespace}, which sending the workspace needs (or use --no-sync)` } });
      }
      // otherwise the pod went away, or the API did: the next event tries again
    } finally {
      syncing.delete(pod);
      wake();
    }
  };

  /** Copies one pod's main log to its end (resuming after drops); done once the container has terminated and the stream ended. */
  let lastCopy: Promise<void> = Promise.resolve();
  const copyLog = (pod: string): Promise<void> => {
    const running = logging.get(pod);
    if (running) return running;
    const previous = lastCopy;
    const task = (async () => {
      await previous; // one writer of stdout.log and its cursor at a time (an evicted pod's copy ends first)
      while (!disposed) {
        const terminatedBefore = mainState(pods?.get(pod, cluster!.namespace))?.terminated !== undefined;
        const gone = !pods?.get(pod, cluster!.namespace);
        const copy = new TimestampedLogCopy(stdoutPath, cursorPath, pod);
        let ended: 'end' | 'dropped' | 'gone';
        try {
          const { response, abort } = await apiGet(cluster!, `/api/v1/namespaces/${cluster!.namespace}/pods/${pod}/log`, {
            container: MAIN_CONTAINER,
            timestamps: 'true',
            follow: terminatedBefore ? undefined : 'true',
            sinceTime: resumeSince(readCursor(cursorPath), pod),
          });
          cleanups.push(abort);
          streams.set(pod, abort);
          ended = await new Promise<'end' | 'dropped'>((resolve) => {
            response.on('data', (chunk: Buffer) => copy.push(chunk));
            response.on('end', () => resolve('end'));
            response.on('aborted', () => resolve('dropped'));
            response.on('error', () => resolve('dropped'));
            response.on('close', () => resolve('dropped')); // after 'end' this changes nothing
          });
          streams.delete(pod);
          const mine = cleanups.indexOf(abort);
          if (mine !== -1) cleanups.splice(mine, 1);
          // A last line without a newline is written only when the log is complete.
          if (ended === 'end' && terminatedBefore) copy.flush();
        } catch (error) {
          ended = statusOf(error) === 404 || gone ? 'gone' : 'dropped';
        } finally {
          copy.close();
        }
        if (ended === 'gone' || (ended === 'end' && terminatedBefore)) break;
        // The stream ended while the container ran (or it was dropped): look again, from the cursor.
        if (ended === 'dropped' || !terminatedBefore) await sleep(ended === 'dropped' ? RETRY_MS : 100);
      }
      wake();
    })();
    logging.set(pod, task);
    lastCopy = task;
    return task;
  };

  const renewLease = (pod: Pod): void => {
    if (!sync || Date.now() - lastLease < leaseMs) return;
    const keeper = (pod.status?.containerStatuses ?? []).find((s) => s.name === KEEPER_CONTAINER);
    if (!keeper?.state?.running) return;
    lastLease = Date.now();
    void exec(pod.metadata!.name!, KEEPER_CONTAINER, ['touch', `${CONTROL_MOUNT}/lease`]).catch(() => {});
  };

  /** Looks at the Job, its pods and (queued) its workload, and moves the run on. */
  const evaluate = async (): Promise<void> => {
    if (result || !cluster || !jobs || !pods || !listed.jobs || !listed.pods) return;
    const ns = cluster.namespace;
    const theJob = jobs.get(name, ns);
    const mine = pods.list(ns).filter((p) => !details.jobUid || p.metadata?.ownerReferences?.some((o) => o.uid === details.jobUid));
    const live = mine.filter((p) => !p.metadata?.deletionTimestamp);
    const pod = newest(live) ?? newest(mine);
    const main = pod ? mainState(pod) : undefined;

    // A pod being deleted while nobody asked to stop the run is an eviction (or a deleted pod): not the command's end.
    if (main?.terminated && pod && (!pod.metadata?.deletionTimestamp || stopping)) {
      const t = main.terminated;
      const podName = pod.metadata!.name!;
      // With retries left (backoffLimit), a failed attempt is not the end: its pod is let go (its
      // out/ is not collected) so that the Job controller starts the next one.
      if (t.exitCode !== 0 && !stopping && theJob && (theJob.status?.failed ?? 0) < (options.retries ?? 0)) {
        if (!known.attempts.some((a) => a.pod === podName)) {
          known.attempts.push({ pod: podName, ...(t.startedAt ? { startedAt: String(t.startedAt) } : {}), endedAt: String(t.finishedAt ?? new Date().toISOString()), reason: 'Failed', message: `exit code ${t.exitCode}; Kubernetes retries (retries: ${options.retries})` });
          report({ attempts: known.attempts });
          void copyLog(podName);
          if (sync) void exec(podName, KEEPER_CONTAINER, ['touch', `${CONTROL_MOUNT}/collected`]).catch(() => {});
        }
        return;
      }
      // The command ended: its end is known; the log copy finishes first. The API ends a follow
      // stream once the container has ended; one still open after that is cut and read again.
      const cut = setTimeout(() => streams.get(podName)?.(), LOG_END_GRACE_MS);
      await copyLog(podName);
      clearTimeout(cut);
      const endedAt = t.finishedAt ? new Date(t.finishedAt) : undefined;
      // The runtime could not execute the command (containerd's StartError): the shell's 127/126, as for Docker.
      if (t.reason === 'StartError' || t.reason === 'ContainerCannotRun') {
        const notFound = /executable file not found|no such file or directory/i.test(t.message ?? '');
        const denied = /permission denied/i.test(t.message ?? '');
        if (notFound || denied) {
          return finish({ exitCode: notFound ? 127 : 126, signal: null, error: { code: notFound ? ErrorCode.CommandNotFound : ErrorCode.CommandNotExecutable, message: `${notFound ? 'command not found' : 'permission denied'} in ${job.container?.image}: ${t.message}` } });
        }
      }
      return finish({
        exitCode: t.exitCode ?? null,
        signal: null,
        ...(endedAt && !Number.isNaN(endedAt.getTime()) ? { endedAt } : {}),
        ...(t.reason === 'OOMKilled' ? { error: { code: ErrorCode.OutOfMemory, message: 'Kubernetes killed the container: it ran out of memory (see the memory limit)' } } : {}),
      });
    }
    if (!theJob) {
      // Stopping: the Job is gone at once, its pod only once the kubelet has stopped it (grace period).
      if (stopping) return mine.length === 0 ? finish({ exitCode: null, signal: 'SIGTERM' }) : undefined;
      return finish({ exitCode: null, signal: null, lost: `its Job ${name} was deleted in namespace ${ns} before the command's end was seen` });
    }
    const failed = (theJob.status?.conditions ?? []).find((c) => c.type === 'Failed' && c.status === 'True');
    if (failed && !live.some((p) => p.status?.phase === 'Running' || p.status?.phase === 'Pending')) {
      return finish({ exitCode: null, signal: null, error: { code: ErrorCode.ClusterJobFailed, message: `the Job failed before the command ended: ${failed.reason ?? ''}${failed.message ? `: ${failed.message}` : ''}` } });
    }
    if (stopping) return; // the Job is being deleted: wait for its pod to go

    if (theJob.spec?.suspend) {
      if (admittedPod !== undefined) {
        // It ran and was suspended again: Kueue evicted or preempted it. That is an attempt, not the end.
        const wl = await workload(cluster, String(theJob.metadata?.uid)).catch(() => undefined);
        const evicted = wl ? condition(wl, 'Evicted') : undefined;
        known.attempts.push({ pod: admittedPod, endedAt: new Date().toISOString(), reason: evicted?.reason ?? 'Suspended', ...(evicted?.message ? { message: evicted.message } : {}) });
        report({ attempts: known.attempts });
        admittedPod = undefined;
      }
      return; // the queue poll reports why it waits
    }
    if (!pod) return setPhase('pending', 'NoPod', 'waiting for the Job controller to create the pod');
    const podName = pod.metadata!.name!;
    if (pod.metadata?.deletionTimestamp) return;
    admittedPod = podName;

    const scheduled = (pod.status?.conditions ?? []).find((c) => c.type === 'PodScheduled');
    if (scheduled?.status === 'False' && scheduled.reason === 'Unschedulable') {
      setPhase('pending', 'Unschedulable', scheduled.message);
      return problem(`unschedulable:${podName}`, { code: ErrorCode.Unschedulable, message: `the pod cannot be scheduled: ${scheduled.message ?? 'Unschedulable'}` });
    }
    const waiting = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].map((s) => s.state?.waiting).find((w) => w && /ErrImagePull|ImagePullBackOff|InvalidImageName|CreateContainerConfigError|CreateContainerError/.test(w.reason ?? ''));
    if (waiting) {
      setPhase('pending', waiting.reason, waiting.message);
      const pull = /Image/.test(waiting.reason ?? '');
      return problem(`waiting:${podName}`, { code: pull ? ErrorCode.ImagePullFailed : ErrorCode.ContainerFailed, message: `${waiting.reason}: ${waiting.message ?? ''}`.trim() });
    }
    problemSince.clear();
    const init = (pod.status?.initContainerStatuses ?? []).find((s) => s.name === SYNC_CONTAINER);
    if (init?.state?.terminated && init.state.terminated.exitCode !== 0) {
      return finish({ exitCode: null, signal: null, error: { code: ErrorCode.SyncFailed, message: `the workspace container ended with exit ${init.state.terminated.exitCode} before the command started (the image needs sh)` } });
    }
    if (sync && init?.state?.running && !synced.has(podName)) {
      setPhase('pending', 'Syncing', 'sending the workspace to the pod');
      void uploadWorkspace(podName);
      return;
    }
    if (main?.running) {
      setPhase('running');
      void copyLog(podName);
      renewLease(pod);
    } else if (!main?.terminated) {
      setPhase('pending', main?.waiting?.reason ?? pod.status?.phase ?? 'Pending', main?.waiting?.message);
    }
  };

  const pollQueue = async (): Promise<void> => {
    const theJob = cluster && jobs?.get(name, cluster.namespace);
    if (!cluster || !theJob?.spec?.suspend || result || stopping) return;
    let wl: Workload | undefined;
    try {
      wl = await workload(cluster, String(theJob.metadata?.uid));
    } catch (error) {
      if (noKueueApi(error)) return setPhase('queued', 'NoKueue', 'Kueue is not installed in this cluster: the Job stays suspended until something admits it');
      return;
    }
    if (!wl) return setPhase('queued', 'NoWorkload', 'waiting for Kueue to create the Workload');
    const reserved = condition(wl, 'QuotaReserved');
    const evicted = condition(wl, 'Evicted');
    const queue = String(details.queue ?? '');
    let position: number | undefined;
    try {
      const pending = await apiGetJson<{ items?: { metadata?: { name?: string }; positionInLocalQueue?: number }[] }>(cluster, `/apis/visibility.kueue.x-k8s.io/${KUEUE_VERSION}/namespaces/${cluster.namespace}/localqueues/${queue}/pendingworkloads`);
      const mine = pending.items?.find((i) => i.metadata?.name === wl.metadata?.name);
      if (mine?.positionInLocalQueue !== undefined) position = mine.positionInLocalQueue + 1;
    } catch {
      // the visibility API is optional in Kueue: no position then
    }
    const why = evicted?.status === 'True' ? evicted : reserved;
    setPhase('queued', why?.reason ?? 'Pending', why?.message, position);
    if (reserved?.status === 'False' && reserved.reason === 'Inadmissible') {
      problem('inadmissible', { code: ErrorCode.Inadmissible, message: `Kueue cannot admit the workload: ${reserved.message ?? 'Inadmissible'}` });
    }
  };

  // The follower starts when someone waits for the end, not when a run is merely looked at (`state`):
  // two followers of one run would both copy its log.
  let started = false;
  const follow = async (): Promise<void> => {
    // Connect (an adopted run retries until the API answers), then list and watch the Job and its pods.
    for (;;) {
      if (disposed) return;
      try {
        cluster = await getCluster();
        break;
      } catch {
        await sleep(RETRY_MS);
      }
    }
    const c = cluster;
    const informer = <T extends k8s.KubernetesObject>(path: string, list: () => Promise<k8s.KubernetesListObject<T>>, which: 'jobs' | 'pods'): k8s.Informer<T> & k8s.ObjectCache<T> => {
      const inf = c.lib.makeInformer<T>(c.config, path, async () => {
        const l = await list();
        listed = { ...listed, [which]: true };
        return l;
      }, selector);
      for (const verb of ['add', 'update', 'delete'] as const) inf.on(verb, () => wake());
      inf.on('error', () => {
        // A dropped watch: start again from the last resourceVersion seen (start() relists on 410 Gone).
        if (!disposed && !result) setTimeout(() => void (disposed || result ? undefined : inf.start().catch(() => {})), RETRY_MS).unref();
      });
      void inf.start().catch(() => {});
      cleanups.push(() => void inf.stop());
      return inf;
    };
    jobs = informer<k8s.V1Job>(`/apis/batch/v1/namespaces/${c.namespace}/jobs`, () => c.batch.listNamespacedJob({ namespace: c.namespace, labelSelector: selector }), 'jobs');
    pods = informer<Pod>(`/api/v1/namespaces/${c.namespace}/pods`, () => c.core.listNamespacedPod({ namespace: c.namespace, labelSelector: selector }), 'pods');
    let lastPoll = 0;
    while (!disposed && !result) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 1000).unref();
      });
      wake = () => {};
      try {
        await evaluate();
        if (Date.now() - lastPoll >= QUEUE_POLL_MS && details.queue !== undefined) {
          lastPoll = Date.now();
          await pollQueue();
        }
      } catch {
        // a passing API failure: the next event or tick looks again
      }
    }
    for (const cleanup of cleanups.splice(0)) cleanup();
  };
  const ensureFollowing = (): void => {
    if (started) return;
    started = true;
    void follow();
  };

  const currentPod = (): Pod | undefined => {
    if (!cluster || !pods) return undefined;
    return newest(pods.list(cluster.namespace).filter((p) => !details.jobUid || p.metadata?.ownerReferences?.some((o) => o.uid === details.jobUid)));
  };

  return {
    spawned: true,
    details,
    get exited() {
      ensureFollowing();
      return exited;
    },
    signal: (sig) => {
      if (result && sig !== 'SIGKILL') return;
      stopping = true;
      // The Job goes with its pods (the API's default for Jobs would orphan them); the kubelet sends
      // SIGTERM and, after the pod's grace period, SIGKILL. A later SIGKILL asks for no grace.
      void deleteJob(sig === 'SIGKILL' ? 0 : undefined).then(() => wake());
    },
    state: async () => {
      if (result) return result;
      try {
        const c = cluster ?? (await getCluster());
        const j = await c.batch.readNamespacedJob({ name, namespace: c.namespace }).catch((error: unknown) => {
          if (statusOf(error) === 404) return undefined;
          throw error;
        });
        const list = await c.core.listNamespacedPod({ namespace: c.namespace, labelSelector: selector });
        const pod = newest(list.items);
        if ((pod && mainState(pod)?.terminated) || !j) {
          ensureFollowing();
          return await exited;
        }
        return undefined;
      } catch {
        return undefined; // no API now: not known to have ended
      }
    },
    collectArtifacts: async (target): Promise<ArtifactManifest> => {
      if (!sync) {
        throw new Error('with sync off the workspace lives only in the image, so out/ is not collected');
      }
      const pod = currentPod();
      const keeper = pod?.status?.containerStatuses?.find((s) => s.name === KEEPER_CONTAINER);
      if (!pod || !keeper?.state?.running) {
        throw new Error(`the pod finished before qwex collected out/ (nobody renewed its lease for ${options.artifact_timeout_seconds ?? DEFAULT_ARTIFACT_TIMEOUT_S}s, or it was deleted)`);
      }
      const podName = pod.metadata!.name!;
      const cwd = target.cwd ? `${WORKSPACE_MOUNT}/${target.cwd}` : WORKSPACE_MOUNT;
      let failure: string | undefined;
      const manifest = await receiveArtifacts(async (write) => {
        const r = await exec(podName, KEEPER_CONTAINER, ['sh', '-c', `cd ${shellQuote(cwd)} 2>/dev/null || exit 0; ${packWatchedCommand(target.settings.watch, shellQuote)}`], undefined, write);
        if (r.code !== 0) failure = r.stderr.trim();
      }, target);
      if (failure !== undefined) throw new Error(`tar in the pod failed: ${failure}`);
      collected = (await exec(podName, KEEPER_CONTAINER, ['touch', `${CONTROL_MOUNT}/collected`]).catch(() => undefined))?.code === 0;
      return manifest;
    },
    release: async () => {
      const pod = currentPod();
      if (pod && sync && !collected) await exec(pod.metadata!.name!, KEEPER_CONTAINER, ['touch', `${CONTROL_MOUNT}/collected`]).catch(() => {});
      if (!options.keep_jobs && options.ttl_seconds_after_finished === undefined) await deleteJob();
      disposed = true;
      for (const cleanup of cleanups.splice(0)) cleanup();
    },
    dispose: () => {
      disposed = true;
      listeners.clear();
      wake();
      for (const cleanup of cleanups.splice(0)) cleanup();
    },
    onDetails: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** The sync script's exit status when the tar it received was shorter than announced (a cut connection): worth retrying. */
const SYNC_CUT_SHORT = 75;

/**
 * Receives the workspace tar on stdin and unpacks it, once: the tar is
 * spooled to a file and unpacked only when complete (a cut upload unpacks
 * nothing), and a lock directory keeps two uploads of the same pod (a
 * supervisor that died mid-upload, and its successor) from unpacking over
 * each other. Knowing the size, it never needs stdin's end.
 */
function syncScript(bytes: number, cwd: string): string {
  const c = CONTROL_MOUNT;
  return [
    `f=${c}/workspace.$$.tar`,
    `head -c ${bytes} > "$f"`,
    `[ "$(wc -c < "$f")" -eq ${bytes} ] || { rm -f "$f"; echo "the workspace upload was cut short" >&2; exit ${SYNC_CUT_SHORT}; }`,
    `until mkdir ${c}/unpacking 2>/dev/null; do sleep 0.1; done`,
    `if [ -e ${c}/synced ]; then r=0; else tar -xf "$f" -C ${WORKSPACE_MOUNT} && mkdir -p ${shellQuote(cwd)} && touch ${c}/synced; r=$?; fi`,
    `rm -f "$f"; rmdir ${c}/unpacking; exit $r`,
  ].join('\n');
}

function mainState(pod: Pod | undefined): k8s.V1ContainerState | undefined {
  return pod?.status?.containerStatuses?.find((s) => s.name === MAIN_CONTAINER)?.state;
}

function newest(pods: Pod[]): Pod | undefined {
  return [...pods].sort((a, b) => String(a.metadata?.creationTimestamp ?? '').localeCompare(String(b.metadata?.creationTimestamp ?? '')) || Number(a.metadata?.resourceVersion ?? 0) - Number(b.metadata?.resourceVersion ?? 0)).pop();
}

interface Workload {
  metadata?: { name?: string };
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}

async function workload(cluster: Cluster, jobUid: string): Promise<Workload | undefined> {
  const list = (await cluster.custom.listNamespacedCustomObject({ group: KUEUE_GROUP, version: KUEUE_VERSION, namespace: cluster.namespace, plural: 'workloads', labelSelector: `${KUEUE_GROUP}/job-uid=${jobUid}` })) as { items?: Workload[] };
  return list.items?.[0];
}

function condition(wl: Workload, type: string): { status: string; reason?: string; message?: string } | undefined {
  return wl.status?.conditions?.find((c) => c.type === type);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
