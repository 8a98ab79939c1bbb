import type { Kysely } from 'kysely';

/**
 * Idempotent submission: a client's key for a submit (its own run id),
 * per user, and the run the key created. A row whose run_id is still null
 * is a submit being accepted (or one a crash interrupted).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('submissions')
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('fingerprint', 'text', (c) => c.notNull())
    .addColumn('run_id', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('submissions_pk', ['user_name', 'key'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('submissions').execute();
}
