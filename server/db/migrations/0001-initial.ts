import type { Kysely } from 'kysely';

/** Users, their tokens, runs with their artifacts, and the content store's blobs. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('users')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('admin', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('tokens')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_name', 'text', (c) => c.notNull().references('users.name'))
    .addColumn('hash', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('last_used_at', 'text')
    .addColumn('revoked_at', 'text')
    .execute();
  await db.schema.createIndex('tokens_by_user').on('tokens').columns(['user_name']).execute();

  await db.schema
    .createTable('runs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('target', 'text', (c) => c.notNull())
    .addColumn('backend', 'text', (c) => c.notNull())
    .addColumn('cluster', 'text')
    .addColumn('queue', 'text')
    .addColumn('name', 'text')
    .addColumn('command', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('exit_code', 'integer')
    .addColumn('signal', 'text')
    .addColumn('end_reason', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('started_at', 'text')
    .addColumn('finished_at', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('run_dir', 'text', (c) => c.notNull())
    .addColumn('record', 'text', (c) => c.notNull())
    .addColumn('artifacts_collected', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('artifacts_manifest', 'text')
    .execute();
  // Listings are keyset pages on id (UUIDv7: time order), per user for everyone but admins.
  await db.schema.createIndex('runs_by_user').on('runs').columns(['user_name', 'id']).execute();
  await db.schema.createIndex('runs_by_status').on('runs').columns(['status', 'id']).execute();

  await db.schema
    .createTable('artifacts')
    .addColumn('run_id', 'text', (c) => c.notNull().references('runs.id'))
    .addColumn('path', 'text', (c) => c.notNull())
    .addColumn('size', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('artifacts_pk', ['run_id', 'path'])
    .execute();

  await db.schema
    .createTable('blobs')
    .addColumn('sha256', 'text', (c) => c.primaryKey())
    .addColumn('size', 'bigint', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of ['artifacts', 'blobs', 'runs', 'tokens', 'users']) await db.schema.dropTable(table).execute();
}
