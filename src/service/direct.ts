import { Runner } from '../run/index.js';
import { launchMonitor } from '../run/monitor-launch.js';
import type { ListedRun, RunView } from '../protocol.js';
import type { Run } from '../run/model.js';
import { listRuns, usageOf } from '../store/listing.js';
import type { ListQuery } from '../store/run-index.js';
import type { RunStore } from '../store/run-store.js';
import { Watcher } from '../watcher.js';
import type { FollowOptions, RunRef, RunService, SubmitRequest } from './run-service.js';

/**
 * Runs without qwexd: each submitted run gets its own monitor, a detached
 * process that supervises it to its final record, so the run is recorded to
 * the end even though this process goes away at once. A look at a run whose
 * monitor died hands it to a new one (see run/reconcile.ts).
 */
export class DirectRunService implements RunService {
  readonly via = 'direct' as const;
  private readonly runner: Runner;
  private readonly watcher: Watcher;

  constructor(private readonly store: RunStore) {
    this.runner = new Runner(store, (dir) => launchMonitor(dir));
    this.watcher = new Watcher(store);
  }

  async submit(request: SubmitRequest): Promise<Run[]> {
    const created = this.runner.create(request.jobs, request.project, {
      supervisor: 'direct',
      ...(request.provenance ? { provenance: request.provenance } : {}),
      ...(request.env ? { baseEnv: request.env } : {}),
    });
    for (const { dir } of created) launchMonitor(dir);
    return created.map((c) => c.run);
  }

  cancel(run: RunRef, options: { graceMs?: number } = {}): Promise<Run> {
    return this.runner.cancel(run.dir, options.graceMs);
  }

  async get(ref: RunRef): Promise<RunView> {
    const run = await this.runner.reconcile(ref.dir);
    const usage = await usageOf(run);
    // Loaded only for runs that have what it adds: `qwex ps` and most looks never load it.
    const extras = run.job.recipe || run.job.retry ? await (await import('../workflow/recipe.js')).runExtras(run, ref.dir) : {};
    return { run, dir: ref.dir, ...(usage ? { usage } : {}), ...extras };
  }

  list(query: ListQuery): Promise<ListedRun[]> {
    return listRuns(this.store.runIndex(), query, (d) => this.runner.reconcile(d));
  }

  wait(run: RunRef, options: { signal?: AbortSignal } = {}): Promise<Run> {
    return this.watcher.waitForEnd(run.dir, { refresh: (d) => this.runner.reconcile(d), ...(options.signal ? { signal: options.signal } : {}) });
  }

  follow(run: RunRef, options: FollowOptions): Promise<Run> {
    return this.watcher.follow(run.dir, { ...options, refresh: (d) => this.runner.reconcile(d) });
  }

  async close(): Promise<void> {
    // The store belongs to whoever opened this service.
  }
}
