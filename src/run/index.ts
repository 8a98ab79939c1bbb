import type { RunStore } from '../store/run-store.js';
import { claim, self } from './claim.js';
import { createRuns, type CreateOptions } from './create.js';
import type { Job, Provenance, Run, RunError } from './model.js';
import { RecordWriter, type Log } from './record.js';
import { reconcile, requestCancel, type OrphanHandler } from './reconcile.js';
import { supervise, type Supervision } from './supervise.js';

export { SupervisionDisposedError, type Supervision } from './supervise.js';
export type { Log } from './record.js';

/**
 * The Runner owns runs' lifecycles: it is the only code that changes a
 * run's state. Its parts live beside it: create (pending records), claim
 * (who supervises), supervise (start or adopt, follow, stop), finish (the
 * final record), reconcile (a look by someone else; hand-over of orphans),
 * stop and terminate (cancel and timeout), environment. A Runner serves one
 * process: the CLI in direct mode, a per-run monitor, qwexd, qwexcloud.
 *
 * `orphaned` says what this process does with an active run whose
 * supervisor is gone: the CLI launches a monitor; qwexd supervises it itself.
 */
export class Runner {
  readonly writer: RecordWriter;

  constructor(
    readonly store: RunStore,
    private readonly orphaned: OrphanHandler,
    log: Log = () => {},
  ) {
    this.writer = new RecordWriter(store, log);
  }

  /** Records pending runs without starting them (see create.ts). */
  create(jobs: readonly Job[], project: string, options: CreateOptions): { run: Run; dir: string }[] {
    return createRuns(this.store, jobs, project, options);
  }

  /** Records one pending run (direct mode) and hands it to a supervisor at once. */
  submit(job: Job, project: string, provenance?: Provenance): { run: Run; dir: string } {
    const created = this.create([job], project, { supervisor: 'direct', provenance: [provenance] })[0]!;
    this.orphaned(created.dir, created.run);
    return created;
  }

  /** Takes the claim of an unclaimed pending run for this process. False when someone else has it (a cancel, another supervisor). */
  claim(dir: string): boolean {
    return claim(dir, self('supervise'));
  }

  /** Supervises a run in this process, which must hold its claim. */
  supervise(dir: string): Supervision {
    return supervise(this.writer, dir);
  }

  reconcile(dir: string): Promise<Run> {
    return reconcile(this.writer, dir, this.orphaned);
  }

  /** Asks for the run to stop (its own grace period unless `graceMs`); see reconcile.ts. `reason` is recorded on a run that never started. */
  cancel(dir: string, graceMs?: number, reason?: RunError): Promise<Run> {
    return requestCancel(this.writer, dir, graceMs, this.orphaned, reason);
  }
}
