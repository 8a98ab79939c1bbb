import type { Runner } from '../run/index.js';
import type { ListedRun, RunView } from '../protocol.js';
import { isTerminal, type Run } from '../run/model.js';
import { listRuns, usageOf } from '../store/listing.js';
import type { ListQuery } from '../store/run-index.js';
import type { RunStore } from '../store/run-store.js';
import { Watcher } from '../watcher.js';
import type { FollowOptions, RunRef, RunService, SubmitRequest } from './run-service.js';

/**
 * Runs without qwexd: each submitted run gets its own monitor, a detached
 * process that supervises it to its final record, so the run is recorded to
 * the end even though this process goes away at once. A look at a run whose
 * monitor died hands it to a new one (see run/reconcile.ts). The runner is
 * loaded on first need: a look at runs that have ended (most of a `qwex ps`,
 * a `qwex status` of a finished run) reads their records and nothing more.
 */
export class DirectRunService implements RunService {
  readonly via = 'direct' as const;
  private runnerLoaded: Promise<{ runner: Runner; launchMonitor: (dir: string) => void }> | undefined;
  private readonly watcher: Watcher;
  private readonly refresh = (dir: string): Promise<Run> => this.reconcile(dir);

  constructor(private readonly store: RunStore) {
    this.watcher = new Watcher(store);
  }

  private loadRunner(): Promise<{ runner: Runner; launchMonitor: (dir: string) => void }> {
    this.runnerLoaded ??= Promise.all([import('../run/index.js'), import('../run/monitor-launch.js')]).then(([{ Runner }, { launchMonitor }]) => ({
      runner: new Runner(this.store, (dir) => launchMonitor(dir)),
      launchMonitor,
    }));
    return this.runnerLoaded;
  }

  /** The record, brought up to date by the runner only while the run is active (an ended record is final). */
  private async reconcile(dir: string): Promise<Run> {
    const run = this.store.read(dir);
    if (isTerminal(run.status)) return run;
    return (await this.loadRunner()).runner.reconcile(dir);
  }

  async submit(request: SubmitRequest): Promise<Run[]> {
    const { runner, launchMonitor } = await this.loadRunner();
    const created = runner.create(request.jobs, request.project, {
      supervisor: 'direct',
      ...(request.provenance ? { provenance: request.provenance } : {}),
      ...(request.env ? { baseEnv: request.env } : {}),
    });
    for (const { dir } of created) launchMonitor(dir);
    return created.map((c) => c.run);
  }

  async cancel(run: RunRef, options: { graceMs?: number } = {}): Promise<Run> {
    return (await this.loadRunner()).runner.cancel(run.dir, options.graceMs);
  }

  async get(ref: RunRef): Promise<RunView> {
    const run = await this.reconcile(ref.dir);
    const usage = await usageOf(run);
    // Loaded only for runs that have what it adds: `qwex ps` and most looks never load it.
    const extras = run.job.recipe || run.job.retry ? await (await import('../workflow/recipe.js')).runExtras(run, ref.dir) : {};
    return { run, dir: ref.dir, ...(usage ? { usage } : {}), ...extras };
  }

  list(query: ListQuery): Promise<ListedRun[]> {
    return listRuns(this.store.runIndex(), query, this.refresh);
  }

  wait(run: RunRef, options: { signal?: AbortSignal } = {}): Promise<Run> {
    return this.watcher.waitForEnd(run.dir, { refresh: this.refresh, ...(options.signal ? { signal: options.signal } : {}) });
  }

  follow(run: RunRef, options: FollowOptions): Promise<Run> {
    return this.watcher.follow(run.dir, { ...options, refresh: this.refresh });
  }

  async close(): Promise<void> {
    // The store belongs to whoever opened this service.
  }
}
