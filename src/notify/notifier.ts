import { readFileSync } from 'node:fs';
import type { DeliveryJournal, DeliveryRow, NewEvent } from './journal.js';
import type { EventPayload } from './payload.js';
import type { SecretSource } from './send.js';
import { DeliveryError } from './targets/delivery-error.js';
import type { NotifyTarget } from './spec.js';

/** The first retry comes this long after a failed attempt; each next one twice as long after, up to RETRY_MAX_MS. */
export const RETRY_BASE_MS = 2000;
export const RETRY_MAX_MS = 10 * 60_000;
/** An attempt in flight holds its row this long: after a crash it is due again then. */
const ATTEMPT_LEASE_MS = 3 * 60_000;
/** Attempts in flight at once; each target's own, so one that hangs holds up no other. */
const MAX_IN_FLIGHT = 16;
/** The journal is looked at this often even when no attempt is due (events journalled by another process). */
const IDLE_LOOK_MS = 30_000;
/** Settled deliveries are kept this long. */
export const KEEP_MS = 30 * 86_400_000;

export type NotifyLog = (level: 'info' | 'warn' | 'error', event: string, fields: Record<string, unknown>) => void;

export interface NotifierOptions {
  journal: DeliveryJournal;
  log: NotifyLog;
  /** The variables the submitter's environment had for this subject's targets (qwexd keeps them with the event). */
  submitterSecrets?: (subject: string) => Promise<Record<string, string>>;
  /** Called once a subject has nothing pending any more (its kept secrets can go). */
  settled?: (subject: string) => Promise<void>;
  /** Where a local command target runs for this delivery (the run's project). */
  cwdOf?: (row: DeliveryRow) => string | undefined;
}

/**
 * Delivers journalled events: each delivery on its own (a target that is
 * down or slow delays no other, nor any run), with exponential backoff
 * (RETRY_BASE_MS doubling up to RETRY_MAX_MS) until its event's retry
 * window closes, every attempt recorded in the journal. Opening a notifier
 * resumes whatever the journal holds pending; a delivered row is never sent
 * again. The window where a receiver can get a copy: it accepted, and this
 * process died before recording that; the copy has the same X-Qwex-Delivery.
 */
export class Notifier {
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private looking: Promise<void> | undefined;
  private lookAgain = false;
  private closed = false;
  private started = false;

  constructor(private readonly options: NotifierOptions) {}

  get journal(): DeliveryJournal {
    return this.options.journal;
  }

  /** Starts delivering, beginning with what an earlier process left pending. */
  start(): void {
    if (this.started) return;
    this.started = true;
    void this.options.journal.prune(new Date(Date.now() - KEEP_MS)).catch((error: unknown) => this.options.log('warn', 'notify-prune-failed', { message: (error as Error).message }));
    this.wake();
  }

  /**
   * Journals an event for its targets (once: false when it was before) and
   * starts delivering it. Resolves once it is in the journal, before any attempt.
   */
  async record(event: NewEvent): Promise<boolean> {
    const fresh = await this.options.journal.record(event);
    if (fresh) {
      this.options.log('info', 'notify-event', { subject: event.subject, on: event.event, targets: event.targets.map((t) => t.shown) });
      this.wake();
    } else {
      this.options.log('info', 'notify-event-known', { subject: event.subject, on: event.event });
    }
    return fresh;
  }

  /** Looks at the journal now (an event was journalled by another process). */
  wake(): void {
    if (this.closed || !this.started) return;
    if (this.looking) {
      this.lookAgain = true;
      return;
    }
    this.looking = this.look().finally(() => {
      this.looking = undefined;
      if (this.lookAgain) {
        this.lookAgain = false;
        this.wake();
      }
    });
  }

  /** Stops: attempts in flight are cut (they are due again at the next start), nothing new begins. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    await this.looking;
    await Promise.allSettled([...this.inFlight.values()]);
  }

  /** Resolves once nothing is in flight (for tests and orderly shutdown). */
  async idle(): Promise<void> {
    while (this.looking || this.inFlight.size > 0) {
      await this.looking;
      await Promise.allSettled([...this.inFlight.values()]);
    }
  }

  private async look(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    try {
      const room = MAX_IN_FLIGHT - this.inFlight.size;
      if (room > 0) {
        // Rows in flight are not due (their attempt holds them until its lease ends).
        for (const row of await this.options.journal.due(new Date(), room)) {
          if (this.closed || this.inFlight.size >= MAX_IN_FLIGHT) break;
          if (this.inFlight.has(row.id)) continue;
          const attempt = this.attempt(row).finally(() => {
            this.inFlight.delete(row.id);
            this.wake();
          });
          this.inFlight.set(row.id, attempt);
        }
      }
      const next = await this.options.journal.nextDue();
      this.schedule(next);
    } catch (error) {
      this.options.log('error', 'notify-journal-failed', { message: (error as Error).message });
      this.schedule(new Date(Date.now() + RETRY_BASE_MS));
    }
  }

  private schedule(next: Date | undefined): void {
    if (this.closed) return;
    const wait = next === undefined ? IDLE_LOOK_MS : Math.min(IDLE_LOOK_MS, Math.max(50, next.getTime() - Date.now()));
    this.timer = setTimeout(() => this.wake(), wait);
    this.timer.unref();
  }

  private async attempt(row: DeliveryRow): Promise<void> {
    const journal = this.options.journal;
    const number = Number(row.attempts) + 1;
    let target: NotifyTarget;
    let payload: EventPayload;
    try {
      target = JSON.parse(row.target_spec) as NotifyTarget;
      payload = JSON.parse(row.payload) as EventPayload;
    } catch (error) {
      await journal.failed(row.id, `the journal row cannot be read: ${(error as Error).message}`, undefined);
      return;
    }
    try {
      await journal.begin(row.id, new Date(Date.now() + ATTEMPT_LEASE_MS));
    } catch (error) {
      this.options.log('error', 'notify-journal-failed', { delivery: row.id, message: (error as Error).message });
      return;
    }
    let outcome: { ok: true; response: string } | { ok: false; error: DeliveryError };
    try {
      const secrets = await this.secretsFor(row.subject);
      // The senders (HTTP, SMTP, commands) load with the first attempt: a qwexd that delivers nothing does not hold them.
      const { send } = await import('./send.js');
      outcome = { ok: true, response: await send(target, { delivery: row.id, payload, secrets, signal: this.abort.signal }, { cwd: this.options.cwdOf?.(row) }) };
    } catch (error) {
      outcome = { ok: false, error: error instanceof DeliveryError ? error : new DeliveryError((error as Error).message ?? String(error), { permanent: false }) };
    }
    if (this.closed && !outcome.ok) {
      // Cut by close(): not a failure of the target; due again as soon as a notifier opens the journal.
      await journal.release(row.id).catch(() => {});
      return;
    }
    const fields = { delivery: row.id, subject: row.subject, on: row.event, target: row.target, attempt: number };
    try {
      if (outcome.ok) {
        await journal.delivered(row.id, outcome.response);
        this.options.log('info', 'notify-delivered', { ...fields, response: outcome.response });
      } else {
        const retryAt = outcome.error.permanent ? undefined : retryTime(number, new Date(row.give_up_at));
        await journal.failed(row.id, outcome.error.message, retryAt);
        this.options.log(retryAt ? 'warn' : 'error', retryAt ? 'notify-attempt-failed' : 'notify-gave-up', { ...fields, message: outcome.error.message, ...(retryAt ? { retryAt: retryAt.toISOString() } : {}) });
      }
      if (this.options.settled && !(await journal.hasPending(row.subject))) await this.options.settled(row.subject);
    } catch (error) {
      this.options.log('error', 'notify-journal-failed', { ...fields, message: (error as Error).message });
    }
  }

  private async secretsFor(subject: string): Promise<SecretSource> {
    const kept = (await this.options.submitterSecrets?.(subject)) ?? {};
    return {
      env: (name) => kept[name] ?? process.env[name],
      file: (path) => {
        try {
          return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
        } catch {
          return undefined; // the target's delivery fails saying the file cannot be read, and is retried
        }
      },
    };
  }
}

/** When attempt `number` (1-based) is followed by the next: doubling from RETRY_BASE_MS, with ±20% jitter; none past `giveUpAt`. */
export function retryTime(number: number, giveUpAt: Date, now = Date.now()): Date | undefined {
  const delay = Math.min(RETRY_BASE_MS * 2 ** (number - 1), RETRY_MAX_MS) * (0.8 + Math.random() * 0.4);
  const at = now + delay;
  return at > giveUpAt.getTime() ? undefined : new Date(at);
}
