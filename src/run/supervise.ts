import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { findBackend } from '../backends/registry.js';
import type { Backend, BackendDescriptor, ExitInfo, StartedProcess } from '../backends/types.js';
import { ErrorCode, QwexError, isNoSpace, toQwexError } from '../errors.js';
import { RunFiles } from '../paths.js';
import { runProgress, type Progress } from '../progress.js';
import { endUnstarted, finishRun } from './finish.js';
import { forgetBaseEnv, runEnvironment } from './environment.js';
import { isTerminal, transition, type Run, type RunError } from './model.js';
import { ensureBaseline, execCwd, execRoot, prepareCopy, type RecordWriter } from './record.js';
import { readStopRequest, writeStopRequest, type StopRequest } from './stop.js';
import { Termination } from './terminate.js';
import { trackUsage } from './usage-tracker.js';

/** How long a start waits for a full disk to have room again, or for a backend to answer, before the run fails. */
const START_WAIT_MS = 5 * 60_000;
const NO_SPACE_RETRY_MS = 1000;
/** Between starts of a run whose backend did not answer: 1 s, doubling up to 16 s. */
const UNREACHABLE_RETRY_MS = 1000;
const UNREACHABLE_RETRY_MAX_MS = 16_000;
/**
 * How long a command runs before its `running` record is written. One that
 * ends sooner goes from `pending` to its end in one write: its start is on
 * disk all the same for whoever takes over (shim.json, flushed before the
 * command ran; a container or Job found by the run's id), and a queue of
 * short jobs saves a record write, its flush and its index update per run.
 * Readers see `pending` for that long.
 */
const RUNNING_RECORD_DELAY_MS = 20;

/** A command started: the run as recorded `running`, and that record's write, which must settle before the next. */
interface Started {
  started: StartedProcess;
  run: Run;
  saved: Promise<void>;
}

/** Why a start is to be tried again: the error it failed with, and whether that was a full disk. */
interface Retry {
  error: RunError;
  noSpace: boolean;
}

/** Waits `ms`; false when `signal` aborted meanwhile. */
function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  return delay(ms, undefined, { signal }).then(
    () => true,
    () => false,
  );
}

/** Calls `write` unless `ended` settles within `ms`; settles once it has or that is decided. */
async function unlessEndedWithin(ended: Promise<unknown>, ms: number, write: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const early = await Promise.race([ended.then(() => true, () => true), new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  clearTimeout(timer);
  if (!early) await write();
}

/** True when `promise` has already settled (resolved): checked without waiting. */
async function hasSettled(promise: Promise<unknown>): Promise<boolean> {
  return Promise.race([promise.then(() => true, () => false), new Promise<boolean>((resolve) => setImmediate(() => resolve(false)))]);
}

/** Rejects a supervision's `done` when its supervisor stops watching (qwexd shutting down); the run goes on. */
export class SupervisionDisposedError extends Error {
  readonly code = 'QWEX_SUPERVISION_DISPOSED';
  constructor(runDir: string) {
    super(`stopped supervising ${runDir}; the run goes on and is adopted by the next supervisor`);
    this.name = 'SupervisionDisposedError';
  }
}

/** Aborts a start in progress when the run is cancelled before its command runs. */
class StartCancelledError extends Error {
  constructor() {
    super('the run was cancelled before its command started');
    this.name = 'StartCancelledError';
  }
}

export interface Supervision {
  /** Settles with the final record once the run ended and was recorded; rejects with SupervisionDisposedError after dispose(). */
  done: Promise<Run>;
  /** Settles once the command is no longer running (before artifacts and the record are written), or never ran. */
  commandEnded: Promise<void>;
  /** Stops the run: aborts a start in progress, or SIGTERM then SIGKILL after the grace period of the stop request (the run's own by default). */
  cancel(): void;
  /** Passes a signal on to the command (the monitor itself was signalled). */
  forward(signal: NodeJS.Signals): void;
  /** Stops supervising without touching the command; `done` rejects with SupervisionDisposedError. */
  dispose(): void;
}

/**
 * Takes a run to its end and records it, in this process, which must hold
 * the run's claim. It works from the record alone, whatever an earlier
 * supervisor left: a pending run is started (or, when a supervisor that died
 * had already started it, the backend finds that command and adopts it:
 * `start` is idempotent per run); a running one is adopted. Every change of
 * the run's state in its life goes through here.
 */
export function supervise(writer: RecordWriter, dir: string): Supervision {
  const log = writer.log;
  const abort = new AbortController();
  // Long work before and after the command (a pull, a sync, collecting artifacts) is shown from progress.json.
  const progress = runProgress(dir);
  let started: StartedProcess | undefined;
  let termination: Termination | undefined;
  let stopReason: StopRequest['reason'] | undefined;
  let timeoutTimer: NodeJS.Timeout | undefined;
  let usage: ReturnType<typeof trackUsage> | undefined;
  let disposed = false;
  let graceMs: number | undefined;
  let commandEnded!: () => void;
  const ended = new Promise<void>((resolve) => (commandEnded = resolve));
  let rejectDisposed!: (error: Error) => void;
  const abandoned = new Promise<never>((_, reject) => (rejectDisposed = reject));
  // Whoever holds `done` learns of disposal; nobody needs to hold `abandoned` itself.
  abandoned.catch(() => {});

  const stop = (reason: StopRequest['reason'], grace: number): void => {
    stopReason ??= reason;
    if (!started) {
      abort.abort(new StartCancelledError());
      return;
    }
    termination?.begin(grace);
  };

  const cancel = (): void => {
    const request = readStopRequest(dir);
    log('cancel', { dir, graceMs: request?.graceMs });
    stop(request?.reason ?? 'cancel', request?.graceMs ?? graceMs ?? 10_000);
  };

  const body = async (): Promise<Run> => {
    let run = writer.store.read(dir);
    if (isTerminal(run.status)) return run;
    graceMs = run.job.killGraceMs;
    const request = readStopRequest(dir);
    if (request) stopReason = request.reason;

    const descriptor = findBackend(run.job.backend);
    let backend: Backend;
    try {
      if (!descriptor) throw new QwexError(ErrorCode.BackendUnavailable, `backend "${run.job.backend}" is not available in this version of qwex`);
      backend = await descriptor.load();
    } catch (error) {
      if (run.status !== 'pending') throw error; // a running run is not failed because this process cannot follow it
      const qe = toQwexError(error);
      return endUnstarted(writer, run, dir, 'failed', { error: { code: qe.code, message: qe.message } });
    }

    if (run.status === 'running') {
      started = backend.adopt(run.backend, dir);
      log('adopted', { dir, runId: run.id });
    } else {
      const result = await start(run, backend, descriptor!);
      if ('final' in result) return result.final;
      started = result.started;
      run = result.run;
      // Its slot in qwexd's queue is free once the command has ended, even before its `running` record is on disk
      // (one flush less between two short runs); the record itself is written in order, the end after it.
      void started.exited.then(() => commandEnded(), () => {});
      await result.saved;
      // Disposed while its start was being recorded: let go of the command as dispose() would have.
      if (disposed) {
        started.dispose();
        throw new SupervisionDisposedError(dir);
      }
    }
    const command = started;
    termination = new Termination(command);
    if (stopReason) termination.begin(readStopRequest(dir)?.graceMs ?? graceMs);

    // What the backend learns while the command runs (queued in a cluster, admitted, evicted) goes into the record.
    const stopRecording = command.onDetails?.((patch) => {
      run = { ...run, backend: { ...run.backend, ...patch } };
      writer.save(run, dir);
    });
    let finished = false;
    const nowRunning = (): void => {
      if (finished || disposed) return;
      if (run.status === 'pending') {
        run = transition(run, 'running');
        writer.save(run, dir, 'file');
        log('running', { dir, runId: run.id });
      }
      startTimeout(run);
    };
    if (run.status === 'pending' && command.running) void command.running.then(nowRunning, () => {});
    else nowRunning();

    usage = trackUsage(command.localProcessGroup, dir);
    const exit: ExitInfo = await Promise.race([command.exited, abandoned]);
    finished = true;
    stopRecording?.();
    commandEnded();
    const resources = usage.stop();
    if (timeoutTimer) clearTimeout(timeoutTimer);
    termination.cancel();
    log('exited', { dir, ...exit });
    // A command that never got to run (a Job cancelled while it waited in its queue) ends its run from pending.
    const ran = run.status === 'running' || command.running === undefined || (await hasSettled(command.running));
    return finishRun(writer, run, dir, exit, command, { stopReason, ...(resources ? { resources } : {}), isDisposed: () => disposed, neverRan: !ran, progress });
  };

  /**
   * Starts a pending run's command (or finds the one a dead supervisor
   * started). A full disk is waited out (up to START_WAIT_MS), and so is a
   * backend that does not answer (a cluster API, an engine or a host being
   * restarted) for runs queued in qwexd, where nobody is there to try again:
   * a run is not thrown away because its turn came at a bad moment. A
   * direct-mode run fails at once with the error, as `docker run` would.
   * Starting again is safe: `start` is idempotent per run.
   */
  const start = async (pending: Run, backend: Backend, descriptor: BackendDescriptor): Promise<{ final: Run } | Started> => {
    const giveUpAt = Date.now() + START_WAIT_MS;
    let waiting: ReturnType<Progress['step']> | undefined;
    try {
      for (let attempt = 1; ; attempt++) {
        const result = await startOnce(pending, backend, descriptor);
        if (!('retry' in result)) return result;
        const { error, noSpace } = result.retry;
        const queued = pending.supervisor === 'qwexd';
        if ((!noSpace && !queued) || Date.now() > giveUpAt) return { final: await endUnstarted(writer, pending, dir, 'failed', { error }) };
        const delayMs = noSpace ? NO_SPACE_RETRY_MS : Math.min(UNREACHABLE_RETRY_MS * 2 ** (attempt - 1), UNREACHABLE_RETRY_MAX_MS);
        if (attempt === 1) log(noSpace ? 'start-waits-for-space' : 'start-waits-for-backend', { dir, message: error.message });
        waiting ??= progress.step(`waiting to start: ${error.message}`, 'tries');
        waiting.set(attempt, { detail: `trying again in ${Math.ceil(delayMs / 1000)} s` });
        if (!(await pause(delayMs, abort.signal))) {
          if (disposed) throw new SupervisionDisposedError(dir);
          return { final: await endStoppedBeforeStart(pending) };
        }
      }
    } finally {
      waiting?.end();
    }
  };

  /** A cancel (or the timeout) came before the command ran: the run ends without it. */
  const endStoppedBeforeStart = (run: Run): Promise<Run> => {
    log('cancelled-before-start', { dir, runId: run.id });
    return endUnstarted(writer, run, dir, stopReason === 'timeout' ? 'failed' : 'cancelled', stopReason === 'timeout' ? { endReason: 'timeout' } : {});
  };

  const startOnce = async (pending: Run, backend: Backend, descriptor: BackendDescriptor): Promise<{ final: Run } | Started | { retry: Retry }> => {
    let run = pending;
    try {
      if (!descriptor.traits.remote) prepareCopy(run, dir);
    } catch (error) {
      const qe = error instanceof QwexError ? error : new QwexError(ErrorCode.StateUnwritable, `cannot make the run's copy of the workspace: ${(error as Error).message}`);
      if (isNoSpace(error)) return { retry: { error: { code: qe.code, message: qe.message }, noSpace: true } };
      return { final: await endUnstarted(writer, run, dir, 'failed', { error: { code: qe.code, message: qe.message } }) };
    }
    ensureBaseline(run, dir, descriptor.traits.remote);
    // A cancel that came before this supervisor: a command an earlier one started is still found and stopped.
    if (stopReason) abort.abort(new StartCancelledError());
    let command: StartedProcess;
    // When the command was handed to the backend: its start, to the millisecond, before any exit file's time.
    const calledAt = new Date().toISOString();
    try {
      command = await backend.start({ ...run.job, cwd: execCwd(run, dir) }, {
        dir,
        runId: run.id,
        project: run.project,
        root: execRoot(run, dir),
        stdoutPath: join(dir, RunFiles.stdout),
        stderrPath: join(dir, RunFiles.stderr),
        env: runEnvironment(run, dir),
        signal: abort.signal,
        progress,
      });
    } catch (error) {
      if (disposed) throw new SupervisionDisposedError(dir);
      if (abort.signal.aborted) return { final: await endStoppedBeforeStart(run) };
      const qe = toQwexError(error);
      if (qe.transient) return { retry: { error: { code: qe.code, message: qe.message }, noSpace: false } };
      return { final: await endUnstarted(writer, run, dir, 'failed', { error: { code: qe.code, message: qe.message } }) };
    }
    if (!command.spawned) {
      // It never started (command not found, not executable): nothing ran, so nothing to capture.
      const exit = await command.exited;
      if (exit.error?.code === ErrorCode.StateUnwritable) return { retry: { error: exit.error, noSpace: true } };
      commandEnded();
      return { final: await endUnstarted(writer, run, dir, 'failed', { exitCode: exit.exitCode, signal: exit.signal, ...(exit.error ? { error: exit.error } : {}) }) };
    }
    // The submitter's environment may hold secrets: once the command has it, the run directory need not.
    forgetBaseEnv(dir);
    run = { ...run, backend: { ...run.backend, ...command.details } };
    if (!command.running) run = transition(run, 'running', { startedAt: run.startedAt ?? command.startedAt?.toISOString() ?? calledAt });
    log('started', { dir, runId: run.id, details: command.details });
    // Nothing else writes the record until this settles (see body); a short command may end meanwhile.
    const record = (): Promise<void> => writer.saveGrouped(run, dir, 'file');
    // Where a backend said where the command is but not yet that it runs (a Job in its queue), that is written at once.
    return { started: command, run, saved: command.running ? record() : unlessEndedWithin(command.exited, RUNNING_RECORD_DELAY_MS, record) };
  };

  const startTimeout = (run: Run): void => {
    if (run.job.timeoutMs === undefined || timeoutTimer) return;
    const left = Date.parse(run.startedAt ?? run.createdAt) + run.job.timeoutMs - Date.now();
    timeoutTimer = setTimeout(() => {
      log('timeout', { dir, timeoutMs: run.job.timeoutMs });
      writeStopRequest(dir, { reason: 'timeout', graceMs: graceMs ?? run.job.killGraceMs });
      stop('timeout', graceMs ?? run.job.killGraceMs);
    }, Math.max(0, left));
  };

  const done = Promise.race([body(), abandoned]).finally(() => commandEnded());
  return {
    done,
    commandEnded: ended,
    cancel,
    forward: (signal) => started?.signal(signal),
    dispose: () => {
      if (disposed) return;
      disposed = true;
      if (timeoutTimer) clearTimeout(timeoutTimer);
      termination?.cancel();
      usage?.stop();
      started?.dispose();
      abort.abort(new SupervisionDisposedError(dir));
      rejectDisposed(new SupervisionDisposedError(dir));
    },
  };
}
