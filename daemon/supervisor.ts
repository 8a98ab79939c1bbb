import { watch, type FSWatcher } from 'node:fs';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER_BACKENDS } from '../src/backends/names.js';
import { RunFiles } from '../src/paths.js';
import { listRuns, usageOf } from '../src/store/listing.js';
import type { ListedRun, RunView } from '../src/protocol.js';
import { isProcessAlive } from '../src/process/info.js';
import { isTerminal, type Job, type Provenance, type Run, type RunStatus } from '../src/run/model.js';
import type { RunStore } from '../src/store/run-store.js';
import type { Runner, Supervision } from '../src/runner.js';
import type { DaemonLog } from './log.js';

/** How often runs finished by other processes are re-checked when no event arrived. */
const SWEEP_MS = 2000;

/**
 * qwexd's run supervision: the queue, the concurrency limit, and the runs
 * themselves. qwexd supervises the runs it starts in-process (Runner.supervise):
 * each command's parent is a small shim in its own session, so runs go on if
 * qwexd dies, and after a restart `recover()` adopts them from the index.
 * Queued runs are records in `pending` with no claim: starting one claims it
 * first, so it starts exactly once.
 */
export class Supervisor {
  private readonly queue: string[] = [];
  /** Runs this daemon supervises (started or adopted), until their record is final. */
  private readonly supervised = new Map<string, Supervision>();
  /** Those whose command still runs: they count against the concurrency limit. */
  private readonly running = new Set<string>();
  /** Queued or supervised runs placed by a cluster's scheduler (k8s, kueue): they take no local slot. */
  private readonly clusterRuns = new Set<string>();
  /** Runs supervised by another process (a direct-mode monitor): watched only, to report their end. */
  private readonly watched = new Map<string, FSWatcher | undefined>();
  private readonly endListeners = new Set<(dir: string, run: Run) => void>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly store: RunStore,
    private readonly runner: Runner,
    private readonly options: { concurrency: number; log: DaemonLog },
  ) {}

  get concurrency(): number {
    return this.options.concurrency;
  }

  counts(): { queued: number; running: number } {
    return { queued: this.queue.length, running: this.running.size };
  }

  /** Re-finds runs left active by an earlier qwexd (or direct mode), adopts or queues them, and starts the queue. */
  async recover(): Promise<void> {
    const rows = this.store.runIndex().list({ statuses: ['pending', 'running'] });
    for (const row of rows) {
      let run: Run;
      try {
        run = await this.runner.reconcile(row.runDir);
      } catch (error) {
        this.options.log.warn('recover-skip', { runId: row.id, message: (error as Error).message });
        continue;
      }
      if (isTerminal(run.status)) continue;
      if (CLUSTER_BACKENDS.has(run.job.backend)) this.clusterRuns.add(row.runDir);
      if (run.status === 'pending') {
        if (run.supervisor === 'qwexd' && !existsSync(join(row.runDir, RunFiles.claim))) this.queue.push(row.runDir);
        else this.watch(row.runDir);
        continue;
      }
      const { monitorPid, monitorStartTime } = run.backend;
      if (monitorPid !== undefined && monitorPid !== process.pid && isProcessAlive(monitorPid, monitorStartTime)) {
        this.watch(row.runDir); // a direct-mode monitor has it
      } else {
        this.supervise(row.runDir, true);
      }
    }
    this.options.log.info('recovered', { queued: this.queue.length, adopted: this.supervised.size, watched: this.watched.size });
    this.sweepTimer = setInterval(() => void this.sweep(), SWEEP_MS);
    this.sweepTimer.unref();
    this.pump();
  }

  /** Records the jobs as queued runs, in order, and starts what the concurrency limit allows. */
  submit(project: string, jobs: Job[], env: Record<string, string>, provenance?: (Provenance | null)[]): Run[] {
    const created = this.runner.createMany(jobs, project, {
      supervisor: 'qwexd',
      baseEnv: env,
      ...(provenance ? { provenance: provenance.map((p) => p ?? undefined) } : {}),
    });
    for (const { dir, run } of created) {
      this.queue.push(dir);
      if (CLUSTER_BACKENDS.has(run.job.backend)) this.clusterRuns.add(dir);
    }
    this.options.log.info('submitted', { count: created.length, first: created[0]?.run.id });
    this.pump();
    // The records as submitted: those just started say so in run.json, which the client reads if it cares.
    return created.map(({ run }) => run);
  }

  async cancel(dir: string, graceMs: number): Promise<Run> {
    const supervision = this.supervised.get(dir);
    if (supervision) {
      this.runner.requestCancel(dir, graceMs);
      supervision.cancel();
      return this.store.read(dir);
    }
    const queued = this.queue.indexOf(dir);
    const run = await this.runner.cancel(dir, graceMs);
    if (queued !== -1 && run.status === 'cancelled') {
      this.queue.splice(queued, 1);
      this.clusterRuns.delete(dir);
      this.notifyEnd(dir, run);
    }
    return run;
  }

  /** A `qwex cancel` in direct mode wrote a stop request and signalled us (SIGUSR1): act on it. */
  checkStopRequests(): void {
    for (const [dir, supervision] of this.supervised) {
      if (this.runner.hasStopRequest(dir)) supervision.cancel();
    }
  }

  queuePosition(dir: string): number | undefined {
    const index = this.queue.indexOf(dir);
    return index === -1 ? undefined : index + 1;
  }

  async view(dir: string): Promise<RunView> {
    const run = await this.runner.reconcile(dir);
    const position = this.queuePosition(dir);
    const usage = await usageOf(run);
    return { run, dir, ...(position === undefined ? {} : { queuePosition: position }), ...(usage ? { usage } : {}) };
  }

  list(query: { project?: string; statuses?: RunStatus[]; limit?: number }): Promise<ListedRun[]> {
    return listRuns(this.store.runIndex(), query, (d) => this.runner.reconcile(d), (d) => this.queuePosition(d));
  }

  /** The run's record, brought up to date if its supervisor died. */
  refresh(dir: string): Promise<Run> {
    return this.runner.reconcile(dir);
  }

  /** Called with the final record whenever a run this daemon knows ends. Returns an unsubscribe function. */
  onRunEnd(listener: (dir: string, run: Run) => void): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  /** Stops supervising; runs go on (their shims wait for them) and queued runs stay queued on disk. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const supervision of this.supervised.values()) supervision.dispose();
    this.supervised.clear();
    this.running.clear();
    for (const watcher of this.watched.values()) watcher?.close();
    this.watched.clear();
    this.queue.length = 0;
  }

  private pump(): void {
    // Cluster runs start at once, whatever the local slots: the cluster decides when they run.
    for (let i = 0; this.clusterRuns.size > 0 && !this.closed && i < this.queue.length; ) {
      const dir = this.queue[i]!;
      if (!this.clusterRuns.has(dir)) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      if (this.runner.claim(dir, 'launch')) this.supervise(dir, false);
    }
    while (!this.closed && this.running.size < this.options.concurrency && this.queue.length > 0) {
      const dir = this.queue.shift()!;
      if (!this.runner.claim(dir, 'launch')) continue; // cancelled (claimed by the cancel) before its turn
      this.supervise(dir, false);
    }
  }

  private supervise(dir: string, adopt: boolean): void {
    const supervision = this.runner.supervise(dir, (event, fields) => this.options.log.info(`run-${event}`, { dir, ...fields }), { adopt });
    this.supervised.set(dir, supervision);
    if (!this.clusterRuns.has(dir)) this.running.add(dir);
    // The next queued run may start as soon as this command has exited; its record is finished meanwhile.
    void supervision.commandEnded.then(() => {
      this.running.delete(dir);
      this.pump();
    });
    supervision.done.then(
      (run) => this.ended(dir, run),
      async (error: unknown) => {
        this.options.log.error('supervise-failed', { dir, message: (error as Error).message });
        this.supervised.delete(dir);
        this.running.delete(dir);
        this.watch(dir);
        this.pump();
      },
    );
  }

  private ended(dir: string, run: Run): void {
    this.supervised.delete(dir);
    this.clusterRuns.delete(dir);
    this.options.log.info('ended', { runId: run.id, status: run.status, exitCode: run.exitCode, signal: run.signal });
    this.notifyEnd(dir, run);
    this.pump();
  }

  private watch(dir: string): void {
    if (this.watched.has(dir)) return;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (name === null || name === RunFiles.record) void this.checkWatched(dir);
      });
      watcher.on('error', () => {});
    } catch {
      // the sweep still finds the end
    }
    this.watched.set(dir, watcher);
  }

  private async checkWatched(dir: string): Promise<void> {
    let run: Run;
    try {
      run = await this.runner.reconcile(dir);
    } catch (error) {
      this.options.log.warn('check-failed', { dir, message: (error as Error).message });
      return;
    }
    if (!this.watched.has(dir)) return;
    if (!isTerminal(run.status)) {
      // Its supervisor (a direct-mode monitor) died while the command runs: this daemon takes it over.
      const { monitorPid, monitorStartTime } = run.backend;
      if (run.status === 'running' && monitorPid !== undefined && !isProcessAlive(monitorPid, monitorStartTime)) {
        this.unwatch(dir);
        this.supervise(dir, true);
      }
      return;
    }
    this.unwatch(dir);
    this.notifyEnd(dir, run);
  }

  private unwatch(dir: string): void {
    this.watched.get(dir)?.close();
    this.watched.delete(dir);
  }

  private async sweep(): Promise<void> {
    for (const dir of [...this.watched.keys()]) await this.checkWatched(dir);
  }

  private notifyEnd(dir: string, run: Run): void {
    for (const listener of this.endListeners) listener(dir, run);
  }
}
