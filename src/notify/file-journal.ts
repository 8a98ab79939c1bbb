import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { ErrorCode, QwexError } from '../errors.js';
import { notifyJournalPath } from './deliveries.js';
import { DeliveryJournal, type NotifyTables } from './journal.js';

/**
 * qwexd's journal of deliveries: a SQLite file in the state directory
 * (notify.db, 0600), beside the run index. Besides the journal's tables it
 * keeps, per run, the values of the variables its targets read secrets
 * from as the submitter's environment had them: from the submission until
 * the run's last delivery is settled, never longer.
 */
export interface FileTables extends NotifyTables {
  notify_secrets: { subject: string; name: string; value: string; kept_at: string };
}

const SCHEMA_VERSION = 1;

export { notifyJournalPath } from './deliveries.js';

export class FileJournal {
  readonly journal: DeliveryJournal;

  private constructor(
    readonly path: string,
    private readonly db: Kysely<FileTables>,
  ) {
    this.journal = new DeliveryJournal(db as unknown as Kysely<NotifyTables>);
  }

  /** Opens (creating when absent) the journal at `path`. Its owner must close it. */
  static async open(path: string = notifyJournalPath(), options: { readonly?: boolean } = {}): Promise<FileJournal> {
    let database: BetterSqlite3.Database;
    try {
      if (!options.readonly) mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      const Sqlite = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;
      const fresh = !existsSync(path);
      database = new Sqlite(path, { timeout: 10_000, readonly: options.readonly === true, fileMustExist: options.readonly === true });
      // It may hold secrets: nobody else reads it (SQLite gives its WAL and shared-memory files the same mode).
      if (fresh && !options.readonly) chmodSync(path, 0o600);
      if (!options.readonly) {
        database.pragma('journal_mode = WAL');
        database.pragma('synchronous = NORMAL');
        // Deleted secrets are overwritten, not left in free pages.
        database.pragma('secure_delete = ON');
      }
    } catch (error) {
      throw new QwexError(ErrorCode.StateUnwritable, `cannot open the notification journal ${path}: ${(error as Error).message}`, {
        hint: 'check that the state directory ($QWEX_STATE_DIR) is writable',
        cause: error,
      });
    }
    const db = new Kysely<FileTables>({ dialect: new SqliteDialect({ database }) });
    if (!options.readonly) await migrate(db, database);
    return new FileJournal(path, db);
  }

  /** Keeps the submitter's values of `names` for the subject's deliveries (those it has). */
  async keepSecrets(subject: string, names: readonly string[], env: Record<string, string | undefined>): Promise<void> {
    const keptAt = new Date().toISOString();
    const rows = [...new Set(names)].flatMap((name) => (env[name] === undefined ? [] : [{ subject, name, value: env[name]!, kept_at: keptAt }]));
    if (rows.length === 0) return;
    await this.db.insertInto('notify_secrets').values(rows).onConflict((oc) => oc.columns(['subject', 'name']).doUpdateSet((eb) => ({ value: eb.ref('excluded.value') }))).execute();
  }

  async secrets(subject: string): Promise<Record<string, string>> {
    const rows = await this.db.selectFrom('notify_secrets').select(['name', 'value']).where('subject', '=', subject).execute();
    return Object.fromEntries(rows.map((r) => [r.name, r.value]));
  }

  /** Forgets values kept longer than `before` whatever became of their runs (a run directory removed before its end was seen). */
  async pruneSecrets(before: Date): Promise<void> {
    const deleted = await this.db.deleteFrom('notify_secrets').where('kept_at', '<', before.toISOString()).executeTakeFirst();
    if (Number(deleted.numDeletedRows) > 0) await sql`PRAGMA wal_checkpoint(TRUNCATE)`.execute(this.db);
  }

  /** Deletes the subject's kept values, and moves the write-ahead log into the file so that no old copy of them stays in it. */
  async forgetSecrets(subject: string): Promise<void> {
    const deleted = await this.db.deleteFrom('notify_secrets').where('subject', '=', subject).executeTakeFirst();
    if (Number(deleted.numDeletedRows) > 0) await sql`PRAGMA wal_checkpoint(TRUNCATE)`.execute(this.db);
  }

  close(): Promise<void> {
    return this.db.destroy();
  }
}

async function migrate(db: Kysely<FileTables>, database: BetterSqlite3.Database): Promise<void> {
  const version = database.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new QwexError(ErrorCode.StateUnwritable, `the notification journal was written by a newer qwex (schema ${version})`, { hint: 'upgrade qwex' });
  }
  if (version === SCHEMA_VERSION) return;
  await db.transaction().execute(async (trx) => {
    await trx.schema
      .createTable('notify_deliveries')
      .ifNotExists()
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('subject', 'text', (c) => c.notNull())
      .addColumn('event', 'text', (c) => c.notNull())
      .addColumn('owner', 'text', (c) => c.notNull())
      .addColumn('target', 'text', (c) => c.notNull())
      .addColumn('target_spec', 'text', (c) => c.notNull())
      .addColumn('payload', 'text', (c) => c.notNull())
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('next_attempt_at', 'text')
      .addColumn('give_up_at', 'text', (c) => c.notNull())
      .addColumn('last_error', 'text')
      .addColumn('last_response', 'text')
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('updated_at', 'text', (c) => c.notNull())
      .addColumn('delivered_at', 'text')
      .execute();
    await trx.schema.createIndex('notify_deliveries_by_subject').ifNotExists().on('notify_deliveries').columns(['subject']).execute();
    await trx.schema.createIndex('notify_deliveries_due').ifNotExists().on('notify_deliveries').columns(['status', 'next_attempt_at']).execute();
    await trx.schema
      .createTable('notify_seen')
      .ifNotExists()
      .addColumn('subject', 'text', (c) => c.notNull())
      .addColumn('event', 'text', (c) => c.notNull())
      .addColumn('seen_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('notify_seen_pk', ['subject', 'event'])
      .execute();
    await trx.schema.createTable('notify_state').ifNotExists().addColumn('key', 'text', (c) => c.primaryKey()).addColumn('value', 'text', (c) => c.notNull()).execute();
    await trx.schema
      .createTable('notify_secrets')
      .ifNotExists()
      .addColumn('subject', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('value', 'text', (c) => c.notNull())
      .addColumn('kept_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('notify_secrets_pk', ['subject', 'name'])
      .execute();
    await sql.raw(`PRAGMA user_version = ${SCHEMA_VERSION}`).execute(trx);
  });
}
