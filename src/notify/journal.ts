import { createHash } from 'node:crypto';
import type { Insertable, Kysely, Selectable } from 'kysely';
import type { EventPayload } from './payload.js';
import type { NotifyEvent, NotifyTarget } from './spec.js';

/**
 * The journal of deliveries: one row per event and target, written before
 * the first attempt and updated after each. It is the truth of what was
 * sent: an event is journalled once (`notify_seen` is its mark, taken in
 * the same transaction as its rows), a delivered row is never attempted
 * again, a pending one is resumed by whoever opens the journal next. The
 * same tables live in qwexd's SQLite file (state directory) and in
 * qwexcloud's database (SQLite or PostgreSQL), through Kysely.
 */
export interface NotifyTables {
  notify_deliveries: DeliveriesTable;
  notify_seen: SeenTable;
  notify_state: StateTable;
}

export interface DeliveriesTable {
  /** The delivery id, sent as X-Qwex-Delivery: a hash of the event and the target, the same at every attempt. */
  id: string;
  /** The run's or workflow's id. */
  subject: string;
  event: string;
  /** Whose it is: the project (qwexd) or the user (qwexcloud); listings filter on it. */
  owner: string;
  /** The target as shown (nothing secret). */
  target: string;
  /** The target's definition (NotifyTarget JSON; secrets only by reference). */
  target_spec: string;
  /** The event's payload (EventPayload JSON), the same at every attempt. */
  payload: string;
  /** pending, delivered or failed. */
  status: string;
  attempts: number;
  /** When the next attempt is due (pending), or until when the one in flight may take. */
  next_attempt_at: string | null;
  /** Past this, a failed attempt is the last. */
  give_up_at: string;
  last_error: string | null;
  /** What the receiver said when it accepted (HTTP 200, the SMTP server's reply). */
  last_response: string | null;
  created_at: string;
  updated_at: string;
  delivered_at: string | null;
}

export interface SeenTable {
  subject: string;
  event: string;
  seen_at: string;
}

export interface StateTable {
  key: string;
  value: string;
}

export type DeliveryRow = Selectable<DeliveriesTable>;
export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

/** A delivery as listings show it (`qwex status`, the server's API). */
export interface DeliveryInfo {
  id: string;
  subject: string;
  event: NotifyEvent;
  target: string;
  status: DeliveryStatus;
  attempts: number;
  nextAttemptAt: string | null;
  lastError: string | null;
  lastResponse: string | null;
  createdAt: string;
  updatedAt: string;
  deliveredAt: string | null;
}

export interface NewEvent {
  subject: string;
  event: NotifyEvent;
  owner: string;
  payload: EventPayload;
  targets: readonly { target: NotifyTarget; shown: string }[];
  retryForMs: number;
}

export function deliveryInfo(row: DeliveryRow): DeliveryInfo {
  return {
    id: row.id,
    subject: row.subject,
    event: row.event as NotifyEvent,
    target: row.target,
    status: row.status as DeliveryStatus,
    attempts: Number(row.attempts),
    nextAttemptAt: row.status === 'pending' ? row.next_attempt_at : null,
    lastError: row.last_error,
    lastResponse: row.last_response,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deliveredAt: row.delivered_at,
  };
}

/** The delivery id of an event to a target: stable, so that the same event journalled twice is one row. */
export function deliveryId(subject: string, event: string, target: NotifyTarget): string {
  return createHash('sha256').update(`${subject}\n${event}\n${stableJson(target)}`).digest('hex').slice(0, 32);
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${stableJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export class DeliveryJournal {
  constructor(private readonly db: Kysely<NotifyTables>) {}

  /**
   * Journals an event once: its mark and one pending row per target, in one
   * transaction. False when it was journalled before (nothing is written).
   */
  async record(event: NewEvent, now = new Date()): Promise<boolean> {
    const at = now.toISOString();
    const giveUp = new Date(now.getTime() + event.retryForMs).toISOString();
    return this.db.transaction().execute(async (trx) => {
      const marked = await trx
        .insertInto('notify_seen')
        .values({ subject: event.subject, event: event.event, seen_at: at })
        .onConflict((oc) => oc.columns(['subject', 'event']).doNothing())
        .executeTakeFirst();
      if (Number(marked.numInsertedOrUpdatedRows ?? 0) === 0) return false;
      const payload = JSON.stringify(event.payload);
      const rows: Insertable<DeliveriesTable>[] = event.targets.map(({ target, shown }) => ({
        id: deliveryId(event.subject, event.event, target),
        subject: event.subject,
        event: event.event,
        owner: event.owner,
        target: shown,
        target_spec: JSON.stringify(target),
        payload,
        status: 'pending',
        attempts: 0,
        next_attempt_at: at,
        give_up_at: giveUp,
        last_error: null,
        last_response: null,
        created_at: at,
        updated_at: at,
        delivered_at: null,
      }));
      if (rows.length > 0) await trx.insertInto('notify_deliveries').values(rows).onConflict((oc) => oc.column('id').doNothing()).execute();
      return true;
    });
  }

  /** Marks an event as handled without deliveries (a run whose spec has no target for it), so that scans skip it. */
  async markSeen(subject: string, event: string, now = new Date()): Promise<void> {
    await this.db.insertInto('notify_seen').values({ subject, event, seen_at: now.toISOString() }).onConflict((oc) => oc.columns(['subject', 'event']).doNothing()).execute();
  }

  /** Whether the subject's event (or any of these events) has been journalled. */
  async markSeenMany(marks: readonly { subject: string; event: string }[], now = new Date()): Promise<void> {
    const at = now.toISOString();
    for (let i = 0; i < marks.length; i += 200) {
      const values = marks.slice(i, i + 200).map((m) => ({ ...m, seen_at: at }));
      await this.db.insertInto('notify_seen').values(values).onConflict((oc) => oc.columns(['subject', 'event']).doNothing()).execute();
    }
  }

  async seen(subject: string, event: string | readonly string[]): Promise<boolean> {
    const events = typeof event === 'string' ? [event] : [...event];
    return (await this.db.selectFrom('notify_seen').select('subject').where('subject', '=', subject).where('event', 'in', events).executeTakeFirst()) !== undefined;
  }

  /** Which of these subjects have any event marked, so a scan reads only the others' records. */
  async seenSubjects(subjects: readonly string[]): Promise<Set<string>> {
    const found = new Set<string>();
    for (let i = 0; i < subjects.length; i += 500) {
      const rows = await this.db.selectFrom('notify_seen').select('subject').where('subject', 'in', subjects.slice(i, i + 500)).execute();
      for (const r of rows) found.add(r.subject);
    }
    return found;
  }

  /** Pending rows whose attempt is due, oldest first. */
  due(now: Date, limit: number): Promise<DeliveryRow[]> {
    return this.db
      .selectFrom('notify_deliveries')
      .selectAll()
      .where('status', '=', 'pending')
      .where('next_attempt_at', '<=', now.toISOString())
      .orderBy('next_attempt_at')
      .limit(limit)
      .execute();
  }

  /** When the next pending attempt is due, if any is. */
  async nextDue(): Promise<Date | undefined> {
    const row = await this.db.selectFrom('notify_deliveries').select((eb) => eb.fn.min('next_attempt_at').as('next')).where('status', '=', 'pending').executeTakeFirst();
    return row?.next ? new Date(row.next) : undefined;
  }

  /**
   * Counts an attempt as begun. Until `until` nobody else starts one: after
   * a crash mid-attempt the row is due again then, and is sent again (with
   * the same delivery id, for a receiver to drop a copy).
   */
  async begin(id: string, until: Date, now = new Date()): Promise<void> {
    await this.db
      .updateTable('notify_deliveries')
      .set((eb) => ({ attempts: eb('attempts', '+', 1), next_attempt_at: until.toISOString(), updated_at: now.toISOString() }))
      .where('id', '=', id)
      .where('status', '=', 'pending')
      .execute();
  }

  /** Gives a row in flight back, due at once (its attempt was cut short by a shutdown). */
  async release(id: string, now = new Date()): Promise<void> {
    const at = now.toISOString();
    await this.db.updateTable('notify_deliveries').set({ next_attempt_at: at, updated_at: at }).where('id', '=', id).where('status', '=', 'pending').execute();
  }

  async delivered(id: string, response: string, now = new Date()): Promise<void> {
    const at = now.toISOString();
    await this.db.updateTable('notify_deliveries').set({ status: 'delivered', next_attempt_at: null, last_response: response, delivered_at: at, updated_at: at }).where('id', '=', id).execute();
  }

  /** Records a failed attempt: retried at `retryAt`, or given up (status failed) when there is none. */
  async failed(id: string, error: string, retryAt: Date | undefined, now = new Date()): Promise<void> {
    await this.db
      .updateTable('notify_deliveries')
      .set({ status: retryAt ? 'pending' : 'failed', next_attempt_at: retryAt ? retryAt.toISOString() : null, last_error: error, updated_at: now.toISOString() })
      .where('id', '=', id)
      .execute();
  }

  /** Deliveries, newest first: of one subject, one owner, or with given statuses. */
  async list(query: { subject?: string; owner?: string; statuses?: readonly DeliveryStatus[]; limit?: number; before?: string } = {}): Promise<DeliveryRow[]> {
    let q = this.db.selectFrom('notify_deliveries').selectAll();
    if (query.subject !== undefined) q = q.where('subject', '=', query.subject);
    if (query.owner !== undefined) q = q.where('owner', '=', query.owner);
    if (query.statuses && query.statuses.length > 0) q = q.where('status', 'in', [...query.statuses]);
    if (query.before !== undefined) q = q.where('created_at', '<', query.before);
    return q.orderBy('created_at', 'desc').orderBy('id').limit(query.limit ?? 100).execute();
  }

  /** Whether any delivery of the subject is still pending. */
  async hasPending(subject: string): Promise<boolean> {
    return (await this.db.selectFrom('notify_deliveries').select('id').where('subject', '=', subject).where('status', '=', 'pending').executeTakeFirst()) !== undefined;
  }

  async state(key: string): Promise<string | undefined> {
    return (await this.db.selectFrom('notify_state').select('value').where('key', '=', key).executeTakeFirst())?.value;
  }

  async setState(key: string, value: string): Promise<void> {
    await this.db.insertInto('notify_state').values({ key, value }).onConflict((oc) => oc.column('key').doUpdateSet({ value })).execute();
  }

  /** Forgets settled deliveries and marks older than `before` (the journal does not grow for ever). */
  async prune(before: Date): Promise<void> {
    const at = before.toISOString();
    await this.db.deleteFrom('notify_deliveries').where('status', 'in', ['delivered', 'failed']).where('updated_at', '<', at).execute();
    await this.db.deleteFrom('notify_seen').where('seen_at', '<', at).execute();
  }
}
