import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { captureArtifacts, summarize, takeBaseline, type ArtifactManifest, type Baseline } from './workspace/artifacts.js';
import { createBackend } from './backends/index.js';
import type { Backend, ExitInfo, StartedProcess } from './backends/types.js';
import { ErrorCode, QwexError, errnoCode } from './errors.js';
import { writeJsonAtomic, type Durability } from './fs-atomic.js';
import { newRunId } from './ids.js';
import { RunFiles, runDir as runDirOf } from './paths.js';
import { isProcessAlive, processStartTime } from './process/info.js';
import { isTerminal, transition, type EndReason, type Job, type Provenance, type Run, type RunStatus } from './run/model.js';
import type { RunStore } from './store/run-store.js';
import { VERSION } from './version.js';
import { sampleGroup } from './process/usage.js';
import { ContentStore, materializeWorkspace, under, workspaceDir } from './workspace/snapshot.js';

/**
 * The Runner owns a run's lifecycle and is the only code that changes a
 * run's state. In direct mode its work is split over two processes:
 *   - `submit` (in the CLI) writes the pending record and launches the run's
 *     monitor, then returns at once;
 *   - `supervise` (in that monitor, a small detached process per run) starts
 *     the command, waits for it, captures artifacts and writes the outcome.
 * Because the monitor outlives the CLI, a run's final record is written even
 * when nobody is watching. See docs/design/direct-mode.md.
 */

/** How long a pending run may wait for its monitor to appear before it is declared lost. */
export const MONITOR_START_TIMEOUT_MS = 30_000;

/** Why a run is being stopped, written before it is signalled so that any supervisor records the right outcome. */
export interface StopRequest {
  reason: 'cancel' | 'timeout';
  requestedAt: string;
  graceMs: number;
}

type Log = (event: string, fields?: Record<string, unknown>) => void;

/** Starts the process that will supervise a run (in direct mode: a detached monitor); `adopt` for a run already running. */
export type MonitorLauncher = (runDir: string, options?: { adopt?: boolean }) => void;

export interface Supervision {
  /** Settles with the final record once the run ended and was recorded. */
  done: Promise<Run>;
  /** Settles once the command is no longer running (before artifacts and the record are written), or it never ran. */
  commandEnded: Promise<void>;
  /** Asks for cancellation (reads the grace period from the cancel request, if any). */
  cancel(): void;
  /** Passes a signal on to the command (the monitor itself was signalled). */
  forward(signal: NodeJS.Signals): void;
  /** Stops supervising without touching the command (qwexd shutting down); `done` then never settles. */
  dispose(): void;
}

export class Runner {
  /**
   * `relaunchMonitors`: when a look at a run finds its supervisor dead while
   * its command runs on a backend whose output must be copied (Docker), start
   * a monitor that adopts it. qwexd sets it false: it adopts such runs itself.
   */
  constructor(
    private readonly store: RunStore,
    private readonly launchMonitor: MonitorLauncher,
    private readonly options: { relaunchMonitors?: boolean } = {},
  ) {}

  /** Records a new pending run and launches its monitor at once (direct mode). Returns without waiting for it to start. */
  submit(job: Job, project: string, provenance?: Provenance): { run: Run; dir: string } {
    const created = this.createMany([job], project, { supervisor: 'direct', provenance: [provenance] })[0]!;
    return { run: this.launch(created.dir) ?? created.run, dir: created.dir };
  }

  /**
   * Records pending runs without starting them, in order (ids ascend),
   * indexed in one transaction. `baseEnv`, when given, is saved (0600) as
   * the environment their commands start from, for runs started later in
   * another process (qwexd's queue).
   */
  createMany(
    jobs: readonly Job[],
    project: string,
    options: { supervisor: 'direct' | 'qwexd'; baseEnv?: Record<string, string>; provenance?: readonly (Provenance | undefined)[] },
  ): { run: Run; dir: string }[] {
    const metadata = { host: hostname(), user: safeUser(), qwexVersion: VERSION };
    const createdAt = new Date().toISOString();
    const runs: Run[] = jobs.map((job, i) => ({
      version: 1,
      id: newRunId(),
      project,
      job,
      status: 'pending',
      createdAt,
      exitCode: null,
      signal: null,
      backend: { name: job.backend },
      supervisor: options.supervisor,
      ...(options.provenance?.[i] ? { provenance: options.provenance[i] } : {}),
      metadata,
    }));
    const env = options.baseEnv === undefined ? [] : [{ name: RunFiles.env, content: `${JSON.stringify(options.baseEnv)}\n` }];
    let dirs: string[];
    try {
      dirs = this.store.createMany(runs, env);
    } catch (error) {
      // The records are on disk once createMany got past writing them; an index failure must not stop the runs.
      if (!(error instanceof QwexError) || error.code !== ErrorCode.IndexError) throw error;
      dirs = runs.map((run) => runDirOf(project, run.id));
    }
    for (const dir of dirs) {
      for (const name of [RunFiles.stdout, RunFiles.stderr]) writeFileSync(join(dir, name), '', { flag: 'a', mode: 0o600 });
    }
    return runs.map((run, i) => ({ run, dir: dirs[i]! }));
  }

  /**
   * Takes the pending run in `dir` for starting: exactly one caller ever
   * wins (an exclusive create of claim.json), so a run is never started
   * twice nor started after a cancel took it.
   */
  claim(dir: string, intent: 'launch' | 'cancel'): boolean {
    try {
      writeFileSync(join(dir, RunFiles.claim), JSON.stringify({ intent, pid: process.pid, at: new Date().toISOString() }), { flag: 'wx', mode: 0o600 });
      return true;
    } catch (error) {
      if (errnoCode(error) === 'EEXIST') return false;
      throw error;
    }
  }

  /** Claims and starts the pending run in `dir`. Undefined when it was already claimed; the failed record when its monitor cannot start. */
  launch(dir: string): Run | undefined {
    if (!this.claim(dir, 'launch')) return undefined;
    try {
      this.launchMonitor(dir);
      return this.store.read(dir);
    } catch (error) {
      const failed = transition(this.store.read(dir), 'failed', {
        endReason: 'error',
        error: { code: ErrorCode.Internal, message: `cannot start the run's monitor: ${(error as Error).message}` },
      });
      this.saveQuietly(failed, dir, undefined, 'full');
      return failed;
    }
  }

  /**
   * Runs the command of the pending run in `dir` to its end and records the
   * outcome, in this process. With `adopt`, takes over a run that another
   * process started (and that outlived it) instead of starting one. Used by
   * the per-run monitor in direct mode and by qwexd, in-process.
   */
  supervise(dir: string, log: Log = () => {}, options: { adopt?: boolean } = {}): Supervision {
    let started: StartedProcess | undefined;
    let stopReason: StopRequest['reason'] | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let timeoutTimer: NodeJS.Timeout | undefined;
    let usage: ReturnType<typeof trackUsage> | undefined;
    let grace = 10_000;
    let commandEnded!: () => void;
    const ended = new Promise<void>((resolve) => (commandEnded = resolve));

    const stop = (reason: StopRequest['reason'], graceMs: number): void => {
      stopReason ??= reason;
      if (!started || killTimer) return;
      started.signal('SIGTERM');
      const target = started;
      killTimer = setTimeout(() => target.signal('SIGKILL'), graceMs);
      killTimer.unref();
    };
    const cancel = (): void => {
      const request = readStopRequest(dir);
      log('cancel', { graceMs: request?.graceMs });
      stop('cancel', request?.graceMs ?? grace);
    };

    const done = (async (): Promise<Run> => {
      let run = this.store.read(dir);
      grace = run.job.killGraceMs;
      const me = { monitorPid: process.pid, ...optional('monitorStartTime', processStartTime(process.pid)) };
      let baseline: Baseline;
      let backend: Backend;
      try {
        backend = await createBackend(run.job.backend);
      } catch (error) {
        if (options.adopt) throw error;
        const qe = error instanceof QwexError ? error : new QwexError(ErrorCode.Internal, (error as Error).message);
        return this.saveFinalQuietly(transition(run, 'failed', { endReason: 'error', error: { code: qe.code, message: qe.message } }), dir, log);
      }

      if (options.adopt) {
        if (isTerminal(run.status)) return run;
        if (run.status !== 'running') throw new QwexError(ErrorCode.InvalidTransition, `run ${run.id} is ${run.status}, not running`);
        // One adopter at a time: two would both copy its output and both write its end.
        if (!this.claimFinalize(dir)) throw new QwexError(ErrorCode.InvalidTransition, `run ${run.id} is already adopted by another process`);
        started = backend.adopt(run.backend, dir);
        run = { ...run, backend: { ...run.backend, ...me } };
        this.saveQuietly(run, dir, log);
        baseline = readBaseline(dir);
        const request = readStopRequest(dir);
        if (request) stop(request.reason, request.graceMs);
      } else {
        if (run.status !== 'pending') throw new QwexError(ErrorCode.InvalidTransition, `run ${run.id} is ${run.status}, not pending`);
        run = { ...run, backend: { ...run.backend, ...me } };
        this.saveQuietly(run, dir, log);
        // A cancel that came before our pid was recorded left only its file; one after it also signals us.
        if (stopReason === 'cancel' || readStopRequest(dir)) {
          return this.saveFinalQuietly(transition(run, 'cancelled', { endReason: 'cancel' }), dir, log);
        }
        try {
          if (!backend.runsRemotely) prepareCopy(run, dir);
        } catch (error) {
          const qe = error instanceof QwexError ? error : new QwexError(ErrorCode.StateUnwritable, `cannot make the run's copy of the workspace: ${(error as Error).message}`);
          return this.saveFinalQuietly(transition(run, 'failed', { endReason: 'error', error: { code: qe.code, message: qe.message } }), dir, log);
        }
        baseline = backend.runsRemotely ? new Map() : takeBaselineSafely(run, dir);
        writeBaseline(dir, baseline);
        try {
          started = await backend.start({ ...run.job, cwd: execCwd(run, dir) }, {
            dir,
            runId: run.id,
            project: run.project,
            root: execRoot(run, dir),
            stdoutPath: join(dir, RunFiles.stdout),
            stderrPath: join(dir, RunFiles.stderr),
            env: runEnvironment(run, dir),
          });
        } catch (error) {
          const qe = error instanceof QwexError ? error : new QwexError(ErrorCode.Internal, (error as Error).message);
          return this.saveFinalQuietly(transition(run, 'failed', { endReason: 'error', error: { code: qe.code, message: qe.message } }), dir, log);
        }
        if (!started.spawned) {
          // It never started (command not found, not executable): nothing ran, so nothing to capture.
          const exit = await started.exited;
          return this.saveFinalQuietly(
            transition(run, 'failed', { endReason: 'error', exitCode: exit.exitCode, signal: exit.signal, ...(exit.error ? { error: exit.error } : {}) }),
            dir,
            log,
          );
        }
        run = transition(run, 'running', { backend: { ...run.backend, ...started.details } });
        this.saveQuietly(run, dir, log);
        log('started', { details: started.details });
        if (stopReason) stop(stopReason, readStopRequest(dir)?.graceMs ?? grace);
      }

      // What the backend learns while the command runs (queued in a cluster, admitted, evicted) goes into the record.
      const stopRecording = started.onDetails?.((patch) => {
        run = { ...run, backend: { ...run.backend, ...patch } };
        this.saveQuietly(run, dir, log);
      });

      if (run.job.timeoutMs !== undefined) {
        const left = Date.parse(run.startedAt ?? run.createdAt) + run.job.timeoutMs - Date.now();
        timeoutTimer = setTimeout(() => {
          log('timeout', { timeoutMs: run.job.timeoutMs });
          writeStopRequest(dir, { reason: 'timeout', graceMs: grace });
          stop('timeout', grace);
        }, Math.max(0, left));
      }

      usage = trackUsage(started.details.pgid);
      const exit = await started.exited;
      stopRecording?.();
      commandEnded();
      const resources = usage.stop();
      if (timeoutTimer) clearTimeout(timeoutTimer);
      if (killTimer) clearTimeout(killTimer);
      // Whatever the leader left behind in its group goes with it when the run was stopped.
      if (stopReason) started.signal('SIGKILL');
      log('exited', { ...exit });
      return this.finish(run, dir, exit, started, { baseline, stopReason, ...(resources ? { resources } : {}) }, log);
    })();

    const settledDone = done.finally(() => commandEnded());
    return {
      done: settledDone,
      commandEnded: ended,
      cancel,
      forward: (signal) => started?.signal(signal),
      dispose: () => {
        if (timeoutTimer) clearTimeout(timeoutTimer);
        if (killTimer) clearTimeout(killTimer);
        usage?.stop();
        started?.dispose();
      },
    };
  }

  /** Captures artifacts and writes the final record of a run whose command has ended. */
  private async finish(
    run: Run,
    dir: string,
    exit: ExitInfo,
    started: StartedProcess,
    context: { baseline: Baseline; stopReason: StopRequest['reason'] | undefined; resources?: Run['resources'] },
    log: Log,
  ): Promise<Run> {
    const finishedAt = (exit.endedAt ?? new Date()).toISOString();
    if (exit.lost !== undefined) {
      const lost = this.saveFinalQuietly(
        transition(run, 'lost', { finishedAt, endReason: 'lost', error: { code: 'QWEX_RUN_LOST', message: `run ${run.id} is lost: ${exit.lost}` } }),
        dir,
        log,
      );
      await started.release();
      return lost;
    }
    const manifest = started.collectArtifacts
      ? await started.collectArtifacts({ runId: run.id, cwd: run.job.workspace?.cwd ?? '', settings: run.job.artifacts, runDir: dir }).catch((error: unknown) => failedCapture(run.id, dir, error))
      : await captureArtifacts({
      cwd: execCwd(run, dir),
      projectRoot: execRoot(run, dir),
      settings: run.job.artifacts,
      runId: run.id,
      baseline: context.baseline,
      filesDir: join(dir, RunFiles.files),
      manifestPath: join(dir, RunFiles.artifacts),
    });
    const [status, endReason] = outcome(exit, context.stopReason);
    const final = transition(run, status, {
      finishedAt,
      endReason,
      exitCode: exit.exitCode,
      signal: exit.signal,
      artifacts: summarize(manifest),
      ...(context.resources ? { resources: context.resources } : {}),
      ...(exit.error ? { error: exit.error } : {}),
      ...(endReason === 'timeout' ? { error: { code: 'QWEX_TIMEOUT', message: `stopped after the ${run.job.timeoutMs} ms timeout` } } : {}),
    });
    this.saveFinal(final, dir, log);
    // Only now that the outcome is recorded: what served the run (its container, its copy of the workspace) goes.
    await started.release();
    if (run.job.workspace) rmSync(workspaceDir(dir), { recursive: true, force: true });
    return final;
  }

  /** Records that the run is to be cancelled, for a supervisor in this process to act on (`Supervision.cancel`). */
  requestCancel(dir: string, graceMs: number): void {
    writeStopRequest(dir, { reason: 'cancel', graceMs });
  }

  /** True when a cancel or timeout was requested for the run. */
  hasStopRequest(dir: string): boolean {
    return readStopRequest(dir) !== undefined;
  }

  /**
   * Asks a run to stop: SIGTERM to its process group, SIGKILL after `graceMs`.
   * Returns the record as it is now; the final status is written by the
   * run's supervisor (or here, when the supervisor is gone).
   */
  async cancel(dir: string, graceMs: number): Promise<Run> {
    let run = this.store.read(dir);
    if (isTerminal(run.status)) {
      throw new QwexError(ErrorCode.RunNotActive, `run ${run.id} already ended (${run.status})`);
    }
    if (run.status === 'pending' && this.claim(dir, 'cancel')) {
      // Nobody started it, and now nobody will.
      run = transition(run, 'cancelled', { endReason: 'cancel' });
      this.store.save(run, dir);
      return run;
    }
    writeStopRequest(dir, { reason: 'cancel', graceMs });
    run = this.store.read(dir);
    const { monitorPid, monitorStartTime } = run.backend;
    if (monitorPid !== undefined && isProcessAlive(monitorPid, monitorStartTime)) {
      // The supervisor (a monitor, or qwexd) reads the request file on SIGUSR1.
      process.kill(monitorPid, 'SIGUSR1');
      return run;
    }
    if (monitorPid === undefined) return run; // the supervisor is starting and will see the request file
    run = this.store.read(dir);
    if (isTerminal(run.status)) return run; // it finished while we looked
    // The supervisor is gone: stop the command ourselves, then record it as any supervisor would.
    let backend: Backend;
    try {
      backend = await createBackend(run.job.backend);
    } catch {
      return run;
    }
    const started = backend.adopt(run.backend, dir);
    try {
      if ((await started.state()) === undefined) {
        started.signal('SIGTERM');
        if (!(await settlesWithin(started.exited, graceMs))) {
          started.signal('SIGKILL');
          await settlesWithin(started.exited, 2000);
        }
        // Whatever the leader left behind in its group goes with it.
        started.signal('SIGKILL');
      }
    } finally {
      started.dispose();
    }
    return this.reconcile(dir);
  }

  /**
   * Brings a record up to date with reality when its supervisor died before
   * writing the outcome: if the command has ended (its exit status is on
   * disk), the outcome and artifacts are recorded here; if nothing of it is
   * left and no status was written, it becomes `lost`. Cheap while the
   * supervisor is alive (two syscalls).
   */
  async reconcile(dir: string): Promise<Run> {
    const run = this.store.read(dir);
    if (isTerminal(run.status)) return run;
    const { monitorPid, monitorStartTime } = run.backend;
    if (monitorPid === undefined) {
      const claimedAt = claimTime(dir);
      if (claimedAt === undefined) return run; // queued: not started yet, and that is fine
      if (Date.now() - claimedAt < MONITOR_START_TIMEOUT_MS) return run;
      return this.markLost(run, dir, `its supervisor never started (see ${join(dir, RunFiles.monitorLog)})`);
    }
    if (isProcessAlive(monitorPid, monitorStartTime)) return run;
    if (run.status === 'pending') return this.markLost(run, dir, `its supervisor (pid ${monitorPid}) died before starting it`);
    let backend: Backend;
    try {
      backend = await createBackend(run.job.backend);
    } catch {
      return run;
    }
    if (!this.claimFinalize(dir)) return this.store.read(dir); // someone else adopted it or is writing the outcome
    const started = backend.adopt(run.backend, dir);
    try {
      const exit = await started.state();
      if (exit === undefined) {
        // Still running, with nobody supervising it. Where its output must be copied, someone must adopt it now.
        this.releaseFinalize(dir);
        if (backend.outputNeedsSupervisor && this.options.relaunchMonitors !== false) this.launchMonitor(dir, { adopt: true });
        return run;
      }
      const fresh = this.store.read(dir);
      if (isTerminal(fresh.status)) return fresh;
      return await this.finish(fresh, dir, exit, started, { baseline: readBaseline(dir), stopReason: readStopRequest(dir)?.reason }, () => {});
    } finally {
      started.dispose();
    }
  }

  /** Gives up the finalize claim taken by this process (the run goes on, and someone else may adopt it). */
  private releaseFinalize(dir: string): void {
    try {
      const holder = JSON.parse(readFileSync(join(dir, RunFiles.finalizeClaim), 'utf8')) as { pid: number };
      if (holder.pid === process.pid) rmSync(join(dir, RunFiles.finalizeClaim), { force: true });
    } catch {
      // nothing held
    }
  }

  /** Exclusive right to finish a run whose supervisor died; a claim by a dead process is taken over. */
  private claimFinalize(dir: string): boolean {
    const path = join(dir, RunFiles.finalizeClaim);
    const mine = JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) });
    try {
      writeFileSync(path, mine, { flag: 'wx', mode: 0o600 });
      return true;
    } catch (error) {
      if (errnoCode(error) !== 'EEXIST') throw error;
    }
    try {
      const holder = JSON.parse(readFileSync(path, 'utf8')) as { pid: number; startTime?: string };
      if (isProcessAlive(holder.pid, holder.startTime)) return false;
    } catch {
      // unreadable: its writer died mid-write
    }
    writeJsonAtomic(path, JSON.parse(mine));
    return true;
  }

  private markLost(run: Run, dir: string, reason: string): Run {
    const lost = transition(run, 'lost', { endReason: 'lost', error: { code: 'QWEX_RUN_LOST', message: `run ${run.id} is lost: ${reason}` } });
    this.store.save(lost, dir);
    return lost;
  }

  /** Saves, reporting an index failure without failing: run.json is already safe. */
  private saveQuietly(run: Run, dir: string, log?: Log, durability: Durability = 'none'): void {
    try {
      this.store.save(run, dir, durability);
    } catch (error) {
      if (error instanceof QwexError && error.code === ErrorCode.IndexError) {
        log?.('index-error', { message: error.message });
        return;
      }
      throw error;
    }
  }

  private saveFinalQuietly(run: Run, dir: string, log: Log): Run {
    this.saveFinal(run, dir, log);
    return run;
  }

  /** The last write of a run. On a full disk, captured files make way for the record. */
  private saveFinal(run: Run, dir: string, log: Log): void {
    try {
      this.saveQuietly(run, dir, log, 'full');
    } catch (error) {
      if (errnoCode(error) !== 'ENOSPC') throw error;
      log('enospc', { message: 'removing captured files to record the outcome' });
      rmSync(join(dir, RunFiles.files), { recursive: true, force: true });
      const artifacts = { count: 0, bytes: 0, skipped: run.artifacts?.skipped ?? 0, error: 'no space left on device: captured files were removed to record the run' };
      this.saveQuietly({ ...run, artifacts }, dir, log, 'full');
    }
  }
}

/** The manifest recorded when artifacts could not be brought home at all (the remote went away). */
function failedCapture(runId: string, dir: string, error: unknown): ArtifactManifest {
  const manifest: ArtifactManifest = { runId, capturedAt: new Date().toISOString(), files: [], skipped: [], totalBytes: 0, error: `artifacts could not be collected: ${(error as Error).message}` };
  try {
    writeJsonAtomic(join(dir, RunFiles.artifacts), manifest, 'file');
  } catch {
    // the record still says what happened
  }
  return manifest;
}

/** Samples the run's process group every second and keeps the peaks, for the final record. */
function trackUsage(pgid: unknown): { stop(): { peakRssBytes: number; cpuSeconds: number } | undefined } {
  if (typeof pgid !== 'number') return { stop: () => undefined };
  let peakRssBytes = 0;
  let cpuSeconds = 0;
  const sample = (): void => {
    sampleGroup(pgid).then(
      (u) => {
        if (!u) return;
        peakRssBytes = Math.max(peakRssBytes, u.rssBytes);
        cpuSeconds = Math.max(cpuSeconds, u.cpuSeconds);
      },
      () => {},
    );
  };
  // The first sample waits a little: most of a very short run's cost would be the sampling itself.
  const first = setTimeout(sample, 200);
  first.unref();
  const timer = setInterval(sample, 1000);
  timer.unref();
  return {
    stop: () => {
      clearTimeout(first);
      clearInterval(timer);
      return peakRssBytes > 0 ? { peakRssBytes, cpuSeconds: Math.round(cpuSeconds * 100) / 100 } : undefined;
    },
  };
}

function outcome(exit: ExitInfo, stopReason: StopRequest['reason'] | undefined): [RunStatus, EndReason] {
  if (stopReason === 'cancel') return ['cancelled', 'cancel'];
  if (stopReason === 'timeout') return ['failed', 'timeout'];
  if (exit.error) return ['failed', 'error'];
  if (exit.exitCode === 0) return ['succeeded', 'exit'];
  if (exit.signal !== null) return ['failed', 'signal'];
  return ['failed', 'exit'];
}

/** The command's environment: this process's (inherited from whoever submitted), the job's, and qwex's own. */
function runEnvironment(run: Run, dir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(readBaseEnv(dir) ?? process.env)) {
    if (value !== undefined && !name.startsWith('QWEX_MONITOR_')) env[name] = value;
  }
  Object.assign(env, run.job.env);
  // Output goes to a file, where Python would otherwise buffer it and live output would lag.
  env.PYTHONUNBUFFERED ??= '1';
  env.QWEX_RUN_ID = run.id;
  env.QWEX_RUN_DIR = dir;
  return env;
}

/** The submitter's environment saved with the run, if it was submitted to run elsewhere or later. */
function readBaseEnv(dir: string): Record<string, string> | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, RunFiles.env), 'utf8')) as Record<string, string>;
  } catch {
    return undefined;
  }
}

/** When the run was claimed (ms since the epoch), or undefined when it was not. */
function claimTime(dir: string): number | undefined {
  try {
    return statSync(join(dir, RunFiles.claim)).mtimeMs;
  } catch {
    return undefined;
  }
}

export function readStopRequest(dir: string): StopRequest | undefined {
  const path = join(dir, RunFiles.cancelRequest);
  if (!existsSync(path)) return undefined;
  try {
    const request = JSON.parse(readFileSync(path, 'utf8')) as Partial<StopRequest>;
    return { reason: request.reason === 'timeout' ? 'timeout' : 'cancel', requestedAt: request.requestedAt ?? '', graceMs: request.graceMs ?? 10_000 };
  } catch {
    return { reason: 'cancel', requestedAt: new Date().toISOString(), graceMs: 10_000 };
  }
}

function writeStopRequest(dir: string, request: Omit<StopRequest, 'requestedAt'>): void {
  writeJsonAtomic(join(dir, RunFiles.cancelRequest), { ...request, requestedAt: new Date().toISOString() }, 'file');
}

/** Where the command runs: its working directory in the project, or the same place in the run's own copy. */
function execCwd(run: Run, dir: string): string {
  return run.job.workspace ? under(workspaceDir(dir), run.job.workspace.cwd) : run.job.cwd;
}

function execRoot(run: Run, dir: string): string {
  return run.job.workspace ? workspaceDir(dir) : run.project;
}

/** Makes the run's own copy of its workspace snapshot (snapshot mode only). */
function prepareCopy(run: Run, dir: string): void {
  const spec = run.job.workspace;
  if (!spec) return;
  const store = new ContentStore();
  const root = workspaceDir(dir);
  rmSync(root, { recursive: true, force: true });
  materializeWorkspace(store.readManifest(spec.manifest), store, run.project, root);
  mkdirSync(execCwd(run, dir), { recursive: true });
}

function takeBaselineSafely(run: Run, dir: string): Baseline {
  try {
    return takeBaseline({ cwd: execCwd(run, dir), projectRoot: execRoot(run, dir), settings: run.job.artifacts });
  } catch {
    return new Map();
  }
}

/** The artifact baseline is saved so that whoever finishes the run (maybe another process) captures only what changed. */
function writeBaseline(dir: string, baseline: Baseline): void {
  try {
    if (baseline.size === 0 && !existsSync(join(dir, RunFiles.baseline))) return; // absent means empty
    writeJsonAtomic(join(dir, RunFiles.baseline), Object.fromEntries(baseline), 'none');
  } catch {
    // without it, a late finisher captures every file under the watched directories
  }
}

function readBaseline(dir: string): Baseline {
  try {
    return new Map(Object.entries(JSON.parse(readFileSync(join(dir, RunFiles.baseline), 'utf8')) as Record<string, string>));
  } catch {
    return new Map();
  }
}

function optional<K extends string, V>(key: K, value: V | undefined): Partial<Record<K, V>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, V>);
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}

/** True when `promise` settled within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
