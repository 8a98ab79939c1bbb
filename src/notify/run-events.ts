import type { Run } from '../run/model.js';
import type { RunStore } from '../store/run-store.js';
import type { Notifier, NotifyLog } from './notifier.js';
import { runPayload } from './payload.js';
import { ScanSchedule } from './scans.js';
import { DEFAULT_RETRY_FOR_MS, DEFAULT_WAITING_AFTER_MS, describeTarget, endEvent, secretNames, type NotifyEvent, type NotifySpec } from './spec.js';

/** How often runs that ended unseen (direct mode, a dead supervisor) are looked for. */
export const ENDED_SCAN_MS = 60_000;
/** How often pending runs are checked for having waited too long. */
export const WAITING_SCAN_MS = 5_000;
/** A scan looks this far before the last one: a run whose end was being written then is not missed. */
const SCAN_OVERLAP_MS = 5 * 60_000;
/** On a first start, runs that ended this long ago at most are still notified. */
const FIRST_SCAN_MS = 24 * 3_600_000;
const WATERMARK = 'runs-scanned-until';
/** The periodic scan looks at the newest runs only (the first scan after a start looks at all): an end nobody saw while qwexd ran is a direct-mode run's, which is recent. */
const PERIODIC_SCAN_RUNS = 2000;

export interface KeptSecrets {
  keepSecrets(subject: string, names: readonly string[], env: Record<string, string | undefined>): Promise<void>;
  forgetSecrets(subject: string): Promise<void>;
}

/**
 * The events of runs on one machine (qwexd's): a run's end (succeeded,
 * failed, cancelled, lost) and a run pending longer than its spec's
 * `waitingAfterMs`, for runs whose job has a `notify` spec. Ends come from
 * the supervisor as they happen; a periodic scan of the index finds those
 * no supervisor saw (a direct-mode run, one that ended while qwexd was
 * down, or a crash between a run's end and its journalling). Each event is
 * journalled once however often it is seen.
 */
export class RunEvents {
  private readonly scans: ScanSchedule;
  /** Specs of pending runs, by directory (a job never changes). */
  private readonly specs = new Map<string, NotifySpec | null>();
  /** Ends that ask for nothing, marked seen together on the next turn of the event loop (see fire). */
  private quietEnds: { subject: string; event: string }[] = [];
  private quietFlush: Promise<void> | undefined;

  constructor(
    private readonly options: {
      notifier: Notifier;
      store: RunStore;
      log: NotifyLog;
      secrets?: KeptSecrets;
    },
  ) {
    this.scans = new ScanSchedule(options.log);
  }

  /**
   * Starts: a first scan (what ended while nobody watched) in the
   * background, so that a large index does not delay qwexd's start; then
   * one every ENDED_SCAN_MS, and a look at pending runs every WAITING_SCAN_MS.
   */
  start(): void {
    this.options.notifier.start();
    void this.scans.run(() => this.scanEnded(0));
    this.scans.every(ENDED_SCAN_MS, () => this.scanEnded(PERIODIC_SCAN_RUNS));
    this.scans.every(WAITING_SCAN_MS, () => this.scanWaiting());
  }

  /** Runs were submitted: keeps the submitter's values of the variables their targets read secrets from. */
  async submitted(runs: readonly { run: Run }[], env: Record<string, string | undefined>): Promise<void> {
    for (const { run } of runs) {
      const names = (run.job.notify?.targets ?? []).flatMap(secretNames);
      if (names.length === 0) continue;
      try {
        await this.options.secrets?.keepSecrets(run.id, names, env);
      } catch (error) {
        this.options.log('warn', 'notify-secrets-not-kept', { runId: run.id, message: (error as Error).message });
      }
    }
  }

  /** A run ended: its event is journalled (and delivered) if its spec asks for it. Never throws. */
  async ended(run: Run): Promise<void> {
    const event = endEvent(run.status);
    if (event === undefined) return;
    await this.fire(run, event);
    // Nothing more will be sent for it: values kept for deliveries that will never be are forgotten now.
    try {
      if (this.options.secrets && run.job.notify && !(await this.options.notifier.journal.hasPending(run.id))) await this.options.secrets.forgetSecrets(run.id);
    } catch (error) {
      this.options.log('warn', 'notify-secrets-not-forgotten', { runId: run.id, message: (error as Error).message });
    }
  }

  async close(): Promise<void> {
    await this.quietFlush;
    return this.scans.close();
  }

  private async flushQuiet(): Promise<void> {
    const marks = this.quietEnds;
    this.quietEnds = [];
    this.quietFlush = undefined;
    try {
      await this.options.notifier.journal.markSeenMany(marks);
    } catch (error) {
      this.options.log('warn', 'notify-seen-not-marked', { runs: marks.length, message: (error as Error).message });
    }
  }

  private async fire(run: Run, event: NotifyEvent): Promise<void> {
    const spec = run.job.notify;
    const targets = (spec?.targets ?? []).filter((t) => t.on.includes(event));
    try {
      if (targets.length === 0) {
        // One write for the ends of a turn, not one each: a mark lost in a crash is the scan's to make.
        this.quietEnds.push({ subject: run.id, event });
        this.quietFlush ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flushQuiet());
        await this.quietFlush;
        return;
      }
      await this.options.notifier.record({
        subject: run.id,
        event,
        owner: run.project,
        payload: runPayload(event, run, { dashboardUrl: spec?.dashboardUrl }),
        targets: targets.map((target) => ({ target, shown: describeTarget(target) })),
        retryForMs: spec?.retryForMs ?? DEFAULT_RETRY_FOR_MS,
      });
    } catch (error) {
      // The scan journals it later: the run's record says it ended, and no mark says it was seen.
      this.options.log('error', 'notify-record-failed', { runId: run.id, on: event, message: (error as Error).message });
    }
  }

  /** Journals the ends of runs (the newest `limit`, 0: all) that finished since the last scan and were not seen. */
  private async scanEnded(limit: number): Promise<void> {
    const journal = this.options.notifier.journal;
    const startedAt = Date.now();
    const mark = await journal.state(WATERMARK);
    const since = (mark === undefined ? startedAt - FIRST_SCAN_MS : Date.parse(mark)) - SCAN_OVERLAP_MS;
    // Filtered in SQLite: a first scan after a start would otherwise bring every run of the index into memory.
    const rows = this.options.store
      .runIndex()
      .list({ statuses: ['succeeded', 'failed', 'cancelled', 'lost'], limit, finishedSince: new Date(since).toISOString() })
      .filter((r) => r.finishedAt !== null && Date.parse(r.finishedAt) >= since);
    const seen = await journal.seenSubjects(rows.map((r) => r.id));
    const quiet: { subject: string; event: string }[] = [];
    for (const [i, row] of rows.entries()) {
      if (this.scans.closed) return;
      if (seen.has(row.id)) continue;
      // Records are read synchronously: let qwexd answer its clients between every hundred.
      if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
      let run: Run;
      try {
        run = this.options.store.read(row.runDir);
      } catch {
        continue; // unreadable or removed: nothing can be said of it
      }
      const event = endEvent(run.status);
      if (event === undefined) continue;
      // Most runs ask for nothing: they are marked seen together, not one write each.
      if (run.job.notify === undefined) quiet.push({ subject: run.id, event });
      else await this.ended(run);
    }
    await journal.markSeenMany(quiet);
    await journal.setState(WATERMARK, new Date(startedAt).toISOString());
  }

  /** Pending runs past their spec's waitingAfterMs fire `waiting`, once each. */
  private async scanWaiting(): Promise<void> {
    const now = Date.now();
    const pending = this.options.store.runIndex().list({ statuses: ['pending'] });
    const live = new Set(pending.map((r) => r.runDir));
    for (const dir of this.specs.keys()) if (!live.has(dir)) this.specs.delete(dir);
    for (const row of pending) {
      if (this.scans.closed) return;
      let spec = this.specs.get(row.runDir);
      let run: Run | undefined;
      if (spec === undefined) {
        try {
          run = this.options.store.read(row.runDir);
        } catch {
          continue; // unreadable or removed: nothing can be said of it (looked at again at the next scan)
        }
        spec = run.job.notify?.targets.some((t) => t.on.includes('waiting')) ? run.job.notify : null;
        this.specs.set(row.runDir, spec);
      }
      if (spec === null || spec === undefined) continue;
      if (now - Date.parse(row.createdAt) < (spec.waitingAfterMs ?? DEFAULT_WAITING_AFTER_MS)) continue;
      if (await this.options.notifier.journal.seen(row.id, 'waiting')) {
        this.specs.set(row.runDir, null);
        continue;
      }
      try {
        run ??= this.options.store.read(row.runDir);
      } catch {
        continue; // as above
      }
      if (run.status === 'pending') await this.fire(run, 'waiting');
      this.specs.set(row.runDir, null);
    }
  }
}
