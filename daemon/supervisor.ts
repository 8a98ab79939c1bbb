import { existsSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { RunFiles, runDir } from '../src/paths.js';
import type { ListedRun, ResourceUsage, RunView } from '../src/protocol.js';
import { isTerminal, type Job, type Run, type RunStatus } from '../src/run.js';
import type { RunStore } from '../src/run-store.js';
import type { Runner } from '../src/runner.js';
import { sampleGroup } from '../src/usage.js';
import type { DaemonLog } from './log.js';

/** How often active runs are re-checked when no event arrived (a dead monitor sends none). */
const SWEEP_MS = 2000;

interface ActiveRun {
  id: string;
  dir: string;
  watcher: FSWatcher | undefined;
}

/**
 * qwexd's run supervision: the queue, the concurrency limit, and knowing
 * when a run ends. Each started run gets its own monitor process (as in
 * direct mode), so runs go on if qwexd dies; after a restart `recover()`
 * finds them again from the index. Queued runs are records in `pending`
 * with no claim: starting one claims it first, so it starts exactly once.
 */
export class Supervisor {
  private readonly queue: string[] = [];
  private readonly active = new Map<string, ActiveRun>();
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
    return { queued: this.queue.length, running: this.active.size };
  }

  /** Re-finds runs left active by an earlier qwexd (or direct mode) and starts the queue. */
  recover(): void {
    const rows = this.store.runIndex().list({ statuses: ['pending', 'running'] });
    for (const row of rows) {
      let run: Run;
      try {
        run = this.runner.reconcile(row.runDir);
      } catch (error) {
        this.options.log.warn('recover-skip', { runId: row.id, message: (error as Error).message });
        continue;
      }
      if (isTerminal(run.status)) continue;
      if (run.status === 'pending' && run.supervisor === 'qwexd' && !existsSync(join(row.runDir, RunFiles.claim))) {
        this.queue.push(row.runDir);
        continue;
      }
      if (run.supervisor === 'qwexd' || run.status === 'running') this.track(run.id, row.runDir);
    }
    this.options.log.info('recovered', { queued: this.queue.length, active: this.active.size });
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweepTimer.unref();
    this.pump();
  }

  /** Records the jobs as queued runs, in order, and starts what the concurrency limit allows. */
  submit(project: string, jobs: Job[], env: Record<string, string>): Run[] {
    const runs: Run[] = [];
    for (const job of jobs) {
      const { run, dir } = this.runner.create(job, project, { supervisor: 'qwexd', baseEnv: env });
      this.queue.push(dir);
      runs.push(run);
    }
    this.options.log.info('submitted', { count: runs.length, first: runs[0]?.id });
    this.pump();
    return runs.map((run) => this.readOr(run));
  }

  async cancel(dir: string, graceMs: number): Promise<Run> {
    const queued = this.queue.indexOf(dir);
    const run = await this.runner.cancel(dir, graceMs);
    if (queued !== -1 && run.status === 'cancelled') {
      this.queue.splice(queued, 1);
      this.notifyEnd(dir, run);
    }
    return run;
  }

  queuePosition(dir: string): number | undefined {
    const index = this.queue.indexOf(dir);
    return index === -1 ? undefined : index + 1;
  }

  async view(dir: string): Promise<RunView> {
    const run = this.runner.reconcile(dir);
    const position = this.queuePosition(dir);
    const usage = run.status === 'running' ? await usageOf(run) : undefined;
    return { run, dir, ...(position === undefined ? {} : { queuePosition: position }), ...(usage ? { usage } : {}) };
  }

  async list(query: { project?: string; statuses?: RunStatus[]; limit?: number }): Promise<ListedRun[]> {
    const rows = this.store.runIndex().list(query);
    return Promise.all(
      rows.map(async (row): Promise<ListedRun> => {
        const position = this.queuePosition(row.runDir);
        if (isTerminal(row.status)) return row;
        let run: Run;
        try {
          run = this.runner.reconcile(row.runDir);
        } catch {
          return row;
        }
        const usage = run.status === 'running' ? await usageOf(run) : undefined;
        return {
          ...row,
          status: run.status,
          startedAt: run.startedAt ?? null,
          finishedAt: run.finishedAt ?? null,
          exitCode: run.exitCode,
          signal: run.signal,
          ...(position === undefined ? {} : { queuePosition: position }),
          ...(usage ? { usage } : {}),
        };
      }),
    );
  }

  /** Called with the final record whenever a run this daemon knows ends. Returns an unsubscribe function. */
  onRunEnd(listener: (dir: string, run: Run) => void): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  /** The run's record, brought up to date if its monitor died. */
  refresh(dir: string): Run {
    return this.runner.reconcile(dir);
  }

  /** A monitor this daemon started has exited: its run's record is final now (or the run is lost). */
  monitorExited(dir: string): void {
    this.check(dir);
  }

  /** Stops watching; runs go on and queued runs stay queued on disk for the next start. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const active of this.active.values()) active.watcher?.close();
    this.active.clear();
    this.queue.length = 0;
  }

  private pump(): void {
    while (!this.closed && this.active.size < this.options.concurrency && this.queue.length > 0) {
      const dir = this.queue.shift()!;
      let run: Run;
      try {
        run = this.store.read(dir);
      } catch (error) {
        this.options.log.warn('dequeue-skip', { dir, message: (error as Error).message });
        continue;
      }
      if (run.status !== 'pending') continue;
      this.track(run.id, dir);
      const launched = this.runner.launch(dir);
      if (launched === undefined) {
        // Claimed by someone else (a cancel): it will not start here.
        this.check(dir);
        continue;
      }
      this.options.log.info('started', { runId: run.id });
      if (isTerminal(launched.status)) this.check(dir);
    }
  }

  private track(id: string, dir: string): void {
    if (this.active.has(dir)) return;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (name === null || name === RunFiles.record) this.check(dir);
      });
      watcher.on('error', () => {});
    } catch {
      // the sweep still finds the end
    }
    this.active.set(dir, { id, dir, watcher });
  }

  private check(dir: string): void {
    let run: Run;
    try {
      run = this.runner.reconcile(dir);
    } catch (error) {
      this.options.log.warn('check-failed', { dir, message: (error as Error).message });
      return;
    }
    if (!isTerminal(run.status)) return;
    const active = this.active.get(dir);
    if (active) {
      active.watcher?.close();
      this.active.delete(dir);
      this.options.log.info('ended', { runId: run.id, status: run.status, exitCode: run.exitCode, signal: run.signal });
    }
    this.notifyEnd(dir, run);
    this.pump();
  }

  private sweep(): void {
    for (const dir of [...this.active.keys()]) this.check(dir);
  }

  private notifyEnd(dir: string, run: Run): void {
    for (const listener of this.endListeners) listener(dir, run);
  }

  private readOr(run: Run): Run {
    try {
      return this.store.read(runDir(run.project, run.id));
    } catch {
      return run;
    }
  }
}

async function usageOf(run: Run): Promise<ResourceUsage | undefined> {
  const pgid = run.backend.pgid;
  if (typeof pgid !== 'number') return undefined;
  const sample = await sampleGroup(pgid);
  return sample && { cpuPercent: sample.cpuPercent, rssBytes: sample.rssBytes, processes: sample.processes };
}
