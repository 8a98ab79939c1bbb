import type { Kysely } from 'kysely';
import { ErrorCode, QwexError } from '../src/errors.js';
import { DeliveryJournal, deliveryInfo, type DeliveryInfo, type DeliveryStatus, type NotifyTables } from '../src/notify/journal.js';
import { Notifier, type NotifyLog } from '../src/notify/notifier.js';
import { runPayload } from '../src/notify/payload.js';
import { resolveNotify } from '../src/notify/resolve.js';
import { ScanSchedule } from '../src/notify/scans.js';
import { DEFAULT_RETRY_FOR_MS, DEFAULT_WAITING_AFTER_MS, describeTarget, endEvent, type NotifyEvent, type NotifySpec } from '../src/notify/spec.js';
import type { NotifySection } from '../src/notify/config.js';
import { isTerminal, type Run, type RunStatus } from '../src/run/model.js';
import type { ServerNotify } from './config.js';
import type { Db } from './db/connect.js';
import type { RunRow } from './db/schema.js';
import type { RunService } from './run-service.js';
import type { Principal } from './tokens.js';

/** How often ended runs nobody journalled, and runs waiting too long, are looked for. */
const ENDED_SCAN_MS = 60_000;
const WAITING_SCAN_MS = 5_000;
/** A scan looks this far before the last one. */
const SCAN_OVERLAP_MS = 5 * 60_000;
const FIRST_SCAN_MS = 24 * 3_600_000;
const WATERMARK = 'runs-scanned-until';
const TERMINAL: RunStatus[] = ['succeeded', 'failed', 'cancelled', 'lost'];

/**
 * qwexcloud's notifications: the team's targets (every run), each user's
 * own, and those a run names (`notify` in the submission, by name, among
 * the team's and the user's). Events come from the runs' rows as they are
 * written to SQL; a scan finds ends nobody journalled (a crash between the
 * row and the journal). The journal is in the server's database, so any
 * restart resumes what is pending, and `GET /v1/notifications` lists it.
 */
export class ServerNotifications {
  readonly notifier: Notifier;
  private readonly journal: DeliveryJournal;
  private readonly scans: ScanSchedule;
  private unsubscribe: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly options: { database: Db; runs: RunService; config: ServerNotify; log: NotifyLog },
  ) {
    // The server's Database includes the journal's tables (migration 0002); the journal sees only those.
    this.journal = new DeliveryJournal(options.database.db as unknown as Kysely<NotifyTables>);
    this.notifier = new Notifier({ journal: this.journal, log: options.log });
    this.scans = new ScanSchedule(options.log);
  }

  /** Checks the names a submission asks for: each must be a target of the team's or the user's. */
  requestedSpec(user: string, names: readonly string[] | undefined): NotifySpec | undefined {
    if (names === undefined || names.length === 0) return undefined;
    const known = [...(this.options.config.team?.targets ?? []), ...(this.options.config.users[user]?.targets ?? [])].flatMap((t) => (t.name ? [t.name] : []));
    for (const name of names) {
      if (!known.includes(name)) {
        throw new QwexError(ErrorCode.Usage, `notify: no notification target "${name}" on this server for ${user}`, { hint: known.length ? `targets: ${known.join(', ')}` : 'the server\'s configuration names none (notify.targets, notify.users)' });
      }
    }
    return { targets: [], use: [...new Set(names)] };
  }

  /** Starts delivering and listening to runs; the first scan for ends nobody journalled runs in the background. */
  start(): void {
    this.unsubscribe = this.options.runs.onChange((row) => {
      if (isTerminal(row.status as RunStatus)) void this.ended(row);
    });
    this.notifier.start();
    void this.scans.run(() => this.scanEnded());
    this.scans.every(ENDED_SCAN_MS, () => this.scanEnded());
    this.scans.every(WAITING_SCAN_MS, () => this.scanWaiting());
  }

  /** Deliveries, newest first: every user's for an admin, else the principal's own. */
  async list(principal: Principal, query: { statuses?: DeliveryStatus[]; limit?: number; before?: string; subject?: string }): Promise<DeliveryInfo[]> {
    const rows = await this.journal.list({ ...query, ...(principal.admin ? {} : { owner: principal.user }) });
    return rows.map(deliveryInfo);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe?.();
    await this.scans.close();
    await this.notifier.close();
  }

  /** The spec of a run of `user`: the team's and the user's targets (those on request only if the run named them). */
  specFor(user: string, run: Run): NotifySpec | undefined {
    const { team, users } = this.options.config;
    const mine = users[user];
    const named = run.job.notify?.use ?? [];
    const pick = (section: NotifySection | undefined, on: NotifySection['on']): NotifySpec | undefined =>
      section && resolveNotify({ ...section, ...(on === undefined ? {} : { on }) }, named.filter((n) => section.targets.some((t) => t.name === n)));
    const parts = [pick(team, team?.on), pick(mine, mine?.on ?? team?.on)].filter((p): p is NotifySpec => p !== undefined);
    if (parts.length === 0) return undefined;
    const waitingAfterMs = mine?.waitingAfterMs ?? team?.waitingAfterMs;
    return {
      targets: parts.flatMap((p) => p.targets),
      ...(waitingAfterMs === undefined ? {} : { waitingAfterMs }),
      ...(team?.retryForMs === undefined ? {} : { retryForMs: team.retryForMs }),
      ...(team?.dashboardUrl === undefined ? {} : { dashboardUrl: team.dashboardUrl }),
    };
  }

  private async ended(row: RunRow): Promise<void> {
    const event = endEvent(row.status as RunStatus);
    if (event !== undefined) await this.fire(row, event);
  }

  private async fire(row: RunRow, event: NotifyEvent): Promise<void> {
    try {
      const run = JSON.parse(row.record) as Run;
      const spec = this.specFor(row.user_name, run);
      const targets = (spec?.targets ?? []).filter((t) => t.on.includes(event));
      if (targets.length === 0) {
        await this.journal.markSeen(row.id, event);
        return;
      }
      await this.notifier.record({
        subject: row.id,
        event,
        owner: row.user_name,
        payload: runPayload(event, run, { dashboardUrl: spec?.dashboardUrl, target: row.target, owner: row.user_name }),
        targets: targets.map((target) => ({ target, shown: describeTarget(target) })),
        retryForMs: spec?.retryForMs ?? DEFAULT_RETRY_FOR_MS,
      });
    } catch (error) {
      // No mark was taken: the next scan journals it.
      this.options.log('error', 'notify-record-failed', { runId: row.id, on: event, message: (error as Error).message });
    }
  }

  private async scanEnded(): Promise<void> {
    const startedAt = Date.now();
    const mark = await this.journal.state(WATERMARK);
    const since = new Date((mark === undefined ? startedAt - FIRST_SCAN_MS : Date.parse(mark)) - SCAN_OVERLAP_MS).toISOString();
    const db = this.options.database.db;
    let after = '';
    for (;;) {
      const rows = await db
        .selectFrom('runs')
        .selectAll()
        .where('status', 'in', TERMINAL)
        .where('finished_at', '>=', since)
        .where('id', '>', after)
        .where(({ not, exists, selectFrom }) => not(exists(selectFrom('notify_seen').select('subject').whereRef('notify_seen.subject', '=', 'runs.id'))))
        .orderBy('id')
        .limit(200)
        .execute();
      for (const row of rows) {
        if (this.closed) return;
        await this.ended(row);
      }
      if (rows.length < 200) break;
      after = rows[rows.length - 1]!.id;
    }
    await this.journal.setState(WATERMARK, new Date(startedAt).toISOString());
  }

  private async scanWaiting(): Promise<void> {
    const { team, users } = this.options.config;
    const waits = [team, ...Object.values(users)].filter((s) => s?.targets.some((t) => (t.on ?? s.on ?? team?.on ?? []).includes('waiting'))).map((s) => s?.waitingAfterMs ?? team?.waitingAfterMs ?? DEFAULT_WAITING_AFTER_MS);
    if (waits.length === 0) return;
    const now = Date.now();
    const rows = await this.options.database.db
      .selectFrom('runs')
      .selectAll()
      .where('status', '=', 'pending')
      .where('created_at', '<=', new Date(now - Math.min(...waits)).toISOString())
      .where(({ not, exists, selectFrom }) => not(exists(selectFrom('notify_seen').select('subject').whereRef('notify_seen.subject', '=', 'runs.id').where('notify_seen.event', '=', 'waiting'))))
      .orderBy('id')
      .limit(500)
      .execute();
    for (const row of rows) {
      if (this.closed) return;
      const wait = users[row.user_name]?.waitingAfterMs ?? team?.waitingAfterMs ?? DEFAULT_WAITING_AFTER_MS;
      if (now - Date.parse(row.created_at) >= wait) await this.fire(row, 'waiting');
    }
  }
}
