/**
 * The one adapter between qwexcloud and qwex's run machinery. Everything
 * else in server/ sees only the Dispatcher interface; this file alone knows
 * that runs are supervised by src/run/supervisor.ts's Supervisor, in this
 * process, as qwexd supervises them.
 */
import { mkdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { DaemonLog } from '../daemon/log.js';
import { Supervisor } from '../src/run/supervisor.js';
import type { Durability } from '../src/fs-atomic.js';
import { QWEX_DIR } from '../src/paths.js';
import type { Job, Provenance, Run } from '../src/run/model.js';
import { writeRunRecord } from '../src/store/run-record.js';
import { RunStore } from '../src/store/run-store.js';

/** Whose a run is and where it was sent: part of where it lives, so that its record alone says so after any crash. */
export interface RunOwner {
  user: string;
  target: string;
}

export interface RunChange {
  run: Run;
  /** The run directory: run.json, stdout.log, stderr.log, artifacts.json, files/. */
  dir: string;
}

export interface DispatchRequest {
  /** Built for `projectOf(owner)`: its cwd is that directory, its workspace a manifest in the content store. */
  job: Job;
  provenance?: Provenance;
  /** The environment the command starts from (the job's env is added to it). */
  baseEnv: Record<string, string>;
}

/**
 * Runs runs. Every change of a run's record made here is reported to
 * onChange listeners, synchronously and in order, right after run.json was
 * written; after a restart, `recover()` re-adopts runs left active and
 * reports each of them once as it is.
 */
export interface Dispatcher {
  /** The directory runs of this owner belong to (their project). */
  projectOf(owner: RunOwner): string;
  /** Whose the run in `dir` is; undefined for a directory that is not one of ours. */
  ownerOf(dir: string): RunOwner | undefined;
  /** Records the run and starts it as soon as the concurrency limit allows. Resolves with the record as submitted. */
  submit(owner: RunOwner, request: DispatchRequest): Promise<RunChange>;
  /** Asks the run to stop (SIGTERM, SIGKILL after `graceMs`); QWEX_RUN_NOT_ACTIVE if it already ended. Resolves with the record as it is now. */
  cancel(dir: string, graceMs: number): Promise<Run>;
  onChange(listener: (change: RunChange) => void): () => void;
  /** Why a queued run has not started yet (its cluster is unhealthy...), when something holds it back. */
  waitReason(dir: string): string | undefined;
  /** Looks at the queue again: what held runs back may have changed (a cluster came back). */
  poke(): void;
  recover(): Promise<void>;
  /** Stops supervising; runs go on and are re-adopted by the next `recover()`. */
  close(): Promise<void>;
}

export interface DispatchOptions {
  /** Where run directories go: ROOT/<user>/<target>/.qwex/runs/<id>. */
  runsRoot: string;
  /** qwex's own state for these runs (its index); the content store is the caller's. */
  indexFile: string;
  logFile: string;
  concurrency: number;
  /** Structured events of the supervision (started, exited, recovered...). */
  log: (level: 'info' | 'warn' | 'error', event: string, fields: Record<string, unknown>) => void;
  /** Why runs of this owner's target may not start now (its cluster is unhealthy), or undefined; `poke()` when that changes. */
  holdBack?: (owner: RunOwner) => string | undefined;
}

export function createDispatcher(options: DispatchOptions): Dispatcher {
  return new SupervisorDispatcher(options);
}

/** A RunStore that reports every record it writes. */
class ObservedRunStore extends RunStore {
  constructor(
    indexFile: string,
    private readonly emit: (change: RunChange) => void,
  ) {
    super({ indexFile });
  }

  override createMany(runs: readonly Run[], extra: { name: string; content: string }[] = []): { run: Run; runDir: string }[] {
    const created = super.createMany(runs, extra);
    for (const { run, runDir } of created) this.emit({ run, dir: runDir });
    return created;
  }

  /** As RunStore.save, reporting the change once run.json is written (an index failure after that still changed the record). */
  override save(run: Run, dir: string, durability: Durability = 'full'): void {
    writeRunRecord(dir, run, durability);
    this.emit({ run, dir });
    this.runIndex().upsert(run, dir);
  }
}

/** The supervisor's log lines go to the server's log as well as to a file of their own. */
class ForwardingLog extends DaemonLog {
  constructor(
    path: string,
    private readonly forward: DispatchOptions['log'],
  ) {
    super(path, false);
  }

  override write(level: 'debug' | 'info' | 'warn' | 'error', event: string, fields: Record<string, unknown> = {}): void {
    super.write(level, event, fields);
    if (level !== 'debug') this.forward(level, event, fields);
  }
}

class SupervisorDispatcher implements Dispatcher {
  private readonly listeners = new Set<(change: RunChange) => void>();
  private readonly store: ObservedRunStore;
  private readonly supervisor: Supervisor;
  private readonly log: ForwardingLog;
  private closed: Promise<void> | undefined;

  constructor(private readonly options: DispatchOptions) {
    this.store = new ObservedRunStore(options.indexFile, (change) => this.emit(change));
    this.log = new ForwardingLog(options.logFile, options.log);
    // Every run is supervised in this process, which also takes over any whose supervisor died.
    this.supervisor = new Supervisor(this.store, { concurrency: options.concurrency, log: this.log });
    const holdBack = options.holdBack;
    if (holdBack) {
      // A run sent to a cluster that cannot be reached waits for it, with the reason, instead of failing to start.
      this.supervisor.addAdmission({
        admit: (dir) => {
          const owner = this.ownerOf(dir);
          const reason = owner && holdBack(owner);
          return reason ? { wait: reason } : { start: true };
        },
      });
    }
  }

  projectOf(owner: RunOwner): string {
    return join(this.options.runsRoot, owner.user, owner.target);
  }

  ownerOf(dir: string): RunOwner | undefined {
    const parts = relative(this.options.runsRoot, dir).split(sep);
    if (parts.length !== 5 || parts[0] === '..' || parts[2] !== QWEX_DIR || parts[3] !== 'runs') return undefined;
    return { user: parts[0]!, target: parts[1]! };
  }

  async submit(owner: RunOwner, request: DispatchRequest): Promise<RunChange> {
    const project = this.projectOf(owner);
    mkdirSync(project, { recursive: true, mode: 0o700 });
    const [run] = this.supervisor.submit(project, [request.job], request.baseEnv, [request.provenance ?? null]);
    const dir = join(project, QWEX_DIR, 'runs', run!.id);
    return { run: this.store.read(dir), dir };
  }

  cancel(dir: string, graceMs: number): Promise<Run> {
    return this.supervisor.cancel(dir, graceMs);
  }

  onChange(listener: (change: RunChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  waitReason(dir: string): string | undefined {
    return this.supervisor.waitReason(dir);
  }

  poke(): void {
    this.supervisor.poke();
  }

  async recover(): Promise<void> {
    await this.supervisor.recover();
    // Report what is still active as it is now, changed or not, so a listener that missed changes (a crash) catches up.
    for (const row of this.store.runIndex().list({ statuses: ['pending', 'running'] })) {
      try {
        this.emit({ run: this.store.read(row.runDir), dir: row.runDir });
      } catch (error) {
        this.log.warn('recover-read-failed', { dir: row.runDir, message: (error as Error).message });
      }
    }
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.supervisor.close();
      this.store.close();
      this.log.close();
      this.listeners.clear();
    })();
    return this.closed;
  }

  private emit(change: RunChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch (error) {
        this.log.error('change-listener-failed', { runId: change.run.id, message: (error as Error).message });
      }
    }
  }
}
