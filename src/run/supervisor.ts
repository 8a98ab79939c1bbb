import { findBackend } from '../backends/registry.js';
import { ErrorCode } from '../errors.js';
import type { ListedRun, RunView } from '../protocol.js';
import { listRuns, usageOf } from '../store/listing.js';
import type { RunStore } from '../store/run-store.js';
import { isHolderAlive, readClaim, self, takeOver } from './claim.js';
import { Runner, SupervisionDisposedError, type Supervision } from './index.js';
import { isTerminal, type Job, type Provenance, type Run, type RunError, type RunStatus } from './model.js';
import { MONITOR_START_TIMEOUT_MS } from './reconcile.js';
import { readStopRequest, writeStopRequest } from './stop.js';
import { WatchedRuns } from './watched-runs.js';
import { AdmissionRules, type Admission } from './admissions.js';
import { SubmissionJournal, completeCutShort } from './submissions.js';

/** A supervision that failed is tried again after this, doubling up to the maximum. */
const SUPERVISE_RETRY_MS = 1000;
const SUPERVISE_RETRY_MAX_MS = 30_000;

export type { Admission } from './admissions.js';

export interface SupervisorLog {
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

/**
 * A long-lived supervisor of runs (qwexd; qwexcloud): the queue, the
 * concurrency limit, and the runs themselves, supervised in-process. Each
 * local command's parent is a small shim in its own session, and every
 * other backend's command lives in its engine or cluster, so runs go on
 * when this process dies; after a restart `recover()` takes over every run
 * whose supervisor is gone, from its record: a run that had started is
 * adopted, one that had not is started, exactly once either way.
 * Queued runs are pending records nobody has claimed; starting one claims it.
 */
export class Supervisor {
  readonly runner: Runner;
  private readonly queue: string[] = [];
  /**
   * The same runs as `queue`, for a membership test that does not walk it,
   * with each one's record as read once: a queued run's record does not
   * change while it waits (a cancel takes it out of the queue), so moving
   * the queue reads no file.
   */
  private readonly queued = new Map<string, Run | undefined>();
  private readonly submissions = new SubmissionJournal();
  /** Runs this process supervises (started or adopted), until their record is final. */
  private readonly supervised = new Map<string, Supervision>();
  /** Those whose command still runs on this machine: they count against the concurrency limit. */
  private readonly running = new Set<string>();
  /** Runs supervised by another process (a direct-mode monitor): watched, to report their end and to take them over if it dies. */
  private readonly watched: WatchedRuns;
  private readonly endListeners = new Set<(dir: string, run: Run) => void>();
  private readonly submitListeners = new Set<(runs: readonly { dir: string; run: Run }[], env: Record<string, string>) => void>();
  private readonly admissions: AdmissionRules;
  /** Runs whose supervision failed here, and the wait before the next try. */
  private readonly superviseRetries = new Map<string, number>();
  private closed = false;

  constructor(
    readonly store: RunStore,
    private readonly options: { concurrency: number; log: SupervisorLog },
  ) {
    this.admissions = new AdmissionRules((event, fields) => options.log.error(event, fields));
    this.runner = new Runner(store, (dir) => this.adoptOrphan(dir), (event, fields) => options.log.info(`run-${event}`, fields));
    // A dead supervisor's run is handed to adoptOrphan by reconcile.
    this.watched = new WatchedRuns((dir) => this.runner.reconcile(dir), (dir, run) => this.notifyEnd(dir, run), (event, fields) => options.log.warn(event, fields));
  }

  /** Adds a rule for when queued runs may start (before recover()). */
  addAdmission(admission: Admission): void {
    this.admissions.add(admission);
  }

  /** Moves the queue on: after something an admission rule waits for changed outside this supervisor's sight. */
  poke(): void {
    this.pump();
  }

  /** Why a queued run waits, when an admission rule holds it back. */
  waitReason(dir: string): string | undefined {
    return this.admissions.waitReason(dir);
  }

  get concurrency(): number {
    return this.options.concurrency;
  }

  counts(): { queued: number; running: number } {
    return { queued: this.queue.length, running: this.running.size };
  }

  /** Finds the runs left active by an earlier supervisor (or direct mode): takes over, queues or watches each, then starts the queue. */
  async recover(): Promise<void> {
    const rows = this.store.runIndex().list({ statuses: ['pending', 'running'] });
    for (const row of rows) {
      let run: Run;
      try {
        run = this.store.read(row.runDir);
      } catch (error) {
        this.options.log.warn('recover-skip', { runId: row.id, message: (error as Error).message });
        continue;
      }
      if (isTerminal(run.status)) continue;
      const holder = readClaim(row.runDir);
      if (holder !== undefined && isHolderAlive(holder)) {
        this.watched.add(row.runDir); // a direct-mode monitor has it
      } else if (holder === undefined && run.status === 'pending' && run.supervisor === 'qwexd') {
        this.enqueue(row.runDir);
      } else if (holder === undefined && run.status === 'pending' && Date.now() - Date.parse(run.createdAt) < MONITOR_START_TIMEOUT_MS) {
        this.watched.add(row.runDir); // its monitor is starting
      } else {
        this.adoptOrphan(row.runDir);
      }
    }
    for (const { submission, found, of } of completeCutShort(this.submissions, this.store)) {
      for (const { run, runDir } of found) {
        if (run.status === 'pending' && readClaim(runDir) === undefined) this.enqueue(runDir);
      }
      this.options.log.info('recovered-submission', { submission, runs: found.length, of });
    }
    this.options.log.info('recovered', { queued: this.queue.length, supervised: this.supervised.size, watched: this.watched.size });
    this.pump();
  }

  /**
   * Records the jobs as queued runs, in order, and starts what the
   * concurrency limit allows. With a `submissionId` it is idempotent: the
   * run ids are chosen and journalled first, so the same submission sent
   * again (its answer was lost with a connection, or this process died
   * half-way) gets the same runs, completed where a crash cut it short.
   */
  submit(project: string, jobs: Job[], env: Record<string, string>, provenance?: (Provenance | null)[], submissionId?: string): Run[] {
    const ids = submissionId === undefined ? undefined : this.submissions.begin(submissionId, project, jobs.length);
    const created = this.runner.create(jobs, project, {
      supervisor: 'qwexd',
      baseEnv: env,
      ...(provenance ? { provenance: provenance.map((p) => p ?? undefined) } : {}),
      ...(ids ? { ids } : {}),
    });
    if (submissionId !== undefined) this.submissions.complete(submissionId);
    for (const listener of this.submitListeners) listener(created, env);
    for (const { dir, run } of created) {
      if (run.status === 'pending' && !this.supervised.has(dir) && readClaim(dir) === undefined) this.enqueue(dir, run);
    }
    this.options.log.info('submitted', { count: created.length, first: created[0]?.run.id });
    this.pump();
    // The records as submitted: those just started say so in run.json, which the client reads if it cares.
    return created.map(({ run }) => run);
  }

  /** Stops a run: its own grace period unless `graceMs` is given; `reason` is recorded on a run that never started. */
  async cancel(dir: string, graceMs?: number, reason?: RunError): Promise<Run> {
    const supervision = this.supervised.get(dir);
    if (supervision) {
      const run = this.store.read(dir);
      if (!isTerminal(run.status)) {
        writeStopRequest(dir, { reason: 'cancel', graceMs: graceMs ?? run.job.killGraceMs });
        supervision.cancel();
      }
      return this.store.read(dir);
    }
    const wasQueued = this.queued.has(dir);
    const run = await this.runner.cancel(dir, graceMs, reason);
    if (wasQueued && isTerminal(run.status)) {
      this.dequeue(dir);
      this.notifyEnd(dir, run);
    }
    return run;
  }

  /** A `qwex cancel` in direct mode wrote a stop request and signalled us (SIGUSR1): act on it. */
  checkStopRequests(): void {
    for (const [dir, supervision] of this.supervised) {
      if (readStopRequest(dir) !== undefined) supervision.cancel();
    }
  }

  queuePosition(dir: string): number | undefined {
    const index = this.queue.indexOf(dir);
    return index === -1 ? undefined : index + 1;
  }

  async view(dir: string): Promise<RunView> {
    const run = await this.refresh(dir);
    const position = this.queuePosition(dir);
    const usage = await usageOf(run);
    const reason = this.admissions.waitReason(dir);
    return { run, dir, ...(position === undefined ? {} : { queuePosition: position }), ...(usage ? { usage } : {}), ...(reason ? { waitReason: reason } : {}) };
  }

  async list(query: { project?: string; statuses?: RunStatus[]; limit?: number }): Promise<ListedRun[]> {
    const rows = await listRuns(this.store.runIndex(), query, (d) => this.refresh(d), (d) => this.queuePosition(d));
    return rows.map((row) => {
      const reason = this.admissions.waitReason(row.runDir);
      return reason === undefined ? row : { ...row, waitReason: reason };
    });
  }

  /** The run's record, brought up to date if its supervisor died. */
  refresh(dir: string): Promise<Run> {
    if (this.supervised.has(dir)) return Promise.resolve(this.store.read(dir));
    return this.runner.reconcile(dir);
  }

  /** Called with the final record whenever a run this supervisor knows ends. Returns an unsubscribe function. */
  onRunEnd(listener: (dir: string, run: Run) => void): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  /** Called with the runs of each submission as recorded (before any starts) and the submitter's environment. Returns an unsubscribe function. */
  onSubmitted(listener: (runs: readonly { dir: string; run: Run }[], env: Record<string, string>) => void): () => void {
    this.submitListeners.add(listener);
    return () => this.submitListeners.delete(listener);
  }

  /** Stops supervising; runs go on (their shims, engines and clusters keep them) and queued runs stay queued on disk. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const supervision of this.supervised.values()) supervision.dispose();
    this.supervised.clear();
    this.running.clear();
    this.watched.close();
    this.queue.length = 0;
    this.queued.clear();
  }

  private dequeue(dir: string): void {
    if (!this.queued.delete(dir)) return;
    const at = this.queue.indexOf(dir);
    if (at !== -1) this.queue.splice(at, 1);
  }

  private enqueue(dir: string, run?: Run): void {
    if (this.queued.has(dir)) return;
    this.queued.set(dir, run);
    this.queue.push(dir);
  }

  /** A queued run's record, read at most once. */
  private queuedRecord(dir: string): Run | undefined {
    let run = this.queued.get(dir);
    if (run === undefined) {
      try {
        run = this.store.read(dir);
      } catch {
        return undefined; // unreadable now: its start reports the problem
      }
      if (this.queued.has(dir)) this.queued.set(dir, run);
    }
    return run;
  }

  /** Takes over an active run whose supervisor is gone, and supervises it here. */
  private adoptOrphan(dir: string): void {
    if (this.closed || this.supervised.has(dir)) return;
    this.dequeue(dir);
    let mine: boolean;
    try {
      mine = takeOver(dir, self('supervise'));
    } catch (error) {
      // A full disk: it is watched, and taken over when a look finds room.
      this.options.log.warn('take-over-failed', { dir, message: (error as Error).message });
      mine = false;
    }
    if (!mine) {
      this.watched.add(dir); // another process took it over first (or will, or this one later)
      return;
    }
    this.watched.delete(dir);
    this.options.log.info('taking-over', { dir });
    try {
      const run = this.store.read(dir);
      this.admissions.restore(dir, run);
    } catch (error) {
      this.options.log.warn('restore-failed', { dir, message: (error as Error).message });
    }
    this.startSupervising(dir);
  }

  private pumping = false;

  private pump(): void {
    if (this.pumping) return; // a cancel by an admission rule ends a run, which pumps again
    this.pumping = true;
    try {
      // In queue order: runs a cluster schedules start whatever the local slots (the cluster decides when they
      // run); the others while slots are free. A run an admission rule holds back keeps its place.
      for (let i = 0; !this.closed && i < this.queue.length; ) {
        const dir = this.queue[i]!;
        const cluster = this.isClusterScheduled(this.queuedRecord(dir));
        if (!cluster && this.running.size >= this.options.concurrency) {
          i++;
          continue;
        }
        const decision = this.admit(dir);
        if (decision === 'wait') {
          i++;
          continue;
        }
        if (decision === 'gone') {
          this.queue.splice(i, 1);
          this.queued.delete(dir);
          continue;
        }
        let claimed: boolean;
        try {
          claimed = this.runner.claim(dir);
        } catch (error) {
          // A full disk, say: it keeps its place and is tried again when the queue next moves.
          this.options.log.warn('claim-failed', { dir, message: (error as Error).message });
          i++;
          continue;
        }
        const record = this.queuedRecord(dir);
        this.queue.splice(i, 1);
        this.queued.delete(dir);
        if (!claimed) continue; // cancelled (claimed by the cancel) before its turn
        this.startSupervising(dir, decision, record);
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Asks the admission rules about a queued run; 'wait' keeps it queued, 'gone' when a rule cancelled it. */
  private admit(dir: string): 'wait' | 'gone' | ((run: Run) => Run) | undefined {
    const run = this.admissions.empty ? undefined : this.queuedRecord(dir);
    if (run === undefined) return undefined;
    const decision = this.admissions.admit(dir, run);
    if (typeof decision === 'object' && 'cancel' in decision) {
      void this.cancelQueued(dir, decision.cancel);
      return 'gone';
    }
    return decision;
  }

  /** Ends a queued run that an admission rule says will never start. */
  private async cancelQueued(dir: string, reason: string): Promise<void> {
    try {
      const run = await this.runner.cancel(dir, undefined, { code: ErrorCode.NotStarted, message: reason });
      if (isTerminal(run.status)) this.notifyEnd(dir, run);
    } catch (error) {
      this.options.log.warn('cancel-queued-failed', { dir, message: (error as Error).message });
    }
  }

  private isClusterScheduled(run: Run | undefined): boolean {
    return run !== undefined && findBackend(run.job.backend)?.traits.clusterScheduled === true;
  }

  /** Supervises a run this process has just claimed; `known` is its record when the caller has it already. */
  private startSupervising(dir: string, patch?: (run: Run) => Run, known?: Run): void {
    let record = known;
    if (patch) {
      try {
        record = patch(record ?? this.store.read(dir));
        this.runner.writer.save(record, dir, 'file');
      } catch (error) {
        this.options.log.error('admission-patch-failed', { dir, message: (error as Error).message });
      }
    }
    if (record === undefined) {
      try {
        record = this.store.read(dir);
      } catch {
        record = undefined; // its supervision reports the problem; it takes a slot meanwhile
      }
    }
    const supervision = this.runner.supervise(dir);
    this.supervised.set(dir, supervision);
    if (!this.isClusterScheduled(record)) this.running.add(dir);
    // The next queued run may start as soon as this command has exited; its record is finished meanwhile.
    void supervision.commandEnded.then(() => {
      this.running.delete(dir);
      this.pump();
    });
    supervision.done.then(
      (run) => this.ended(dir, run),
      (error: unknown) => {
        this.supervised.delete(dir);
        this.running.delete(dir);
        if (error instanceof SupervisionDisposedError) return;
        // This process still holds the run's claim, so no other will take the run: it supervises it again a little
        // later (a full disk, mostly; the run's shim keeps the command and its exit status meanwhile).
        const retryMs = Math.min(SUPERVISE_RETRY_MAX_MS, (this.superviseRetries.get(dir) ?? SUPERVISE_RETRY_MS / 2) * 2);
        this.superviseRetries.set(dir, retryMs);
        this.options.log.error('supervise-failed', { dir, message: (error as Error).message, retryMs });
        setTimeout(() => this.adoptOrphan(dir), retryMs).unref();
        this.pump();
      },
    );
  }

  private ended(dir: string, run: Run): void {
    this.supervised.delete(dir);
    this.superviseRetries.delete(dir);
    this.admissions.release(dir, run);
    this.options.log.info('ended', { runId: run.id, status: run.status, exitCode: run.exitCode, signal: run.signal });
    this.notifyEnd(dir, run);
    this.pump();
  }

  private notifyEnd(dir: string, run: Run): void {
    for (const listener of this.endListeners) listener(dir, run);
  }
}
