import type { Kysely } from 'kysely';

/** The journal of notification deliveries (src/notify/journal.ts), and each cluster's last known health. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('notify_deliveries')
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
  await db.schema.createIndex('notify_deliveries_by_subject').on('notify_deliveries').columns(['subject']).execute();
  await db.schema.createIndex('notify_deliveries_by_owner').on('notify_deliveries').columns(['owner', 'created_at']).execute();
  await db.schema.createIndex('notify_deliveries_due').on('notify_deliveries').columns(['status', 'next_attempt_at']).execute();

  await db.schema
    .createTable('notify_seen')
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('event', 'text', (c) => c.notNull())
    .addColumn('seen_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('notify_seen_pk', ['subject', 'event'])
    .execute();

  await db.schema.createTable('notify_state').addColumn('key', 'text', (c) => c.primaryKey()).addColumn('value', 'text', (c) => c.notNull()).execute();

  // Ended runs are found by when they finished (the scan for ends nobody journalled).
  await db.schema.createIndex('runs_by_finished').on('runs').columns(['finished_at']).execute();

  await db.schema
    .createTable('cluster_status')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('healthy', 'integer', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('since', 'text', (c) => c.notNull())
    .addColumn('checked_at', 'text', (c) => c.notNull())
    .addColumn('queues', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('runs_by_finished').execute();
  for (const table of ['cluster_status', 'notify_state', 'notify_seen', 'notify_deliveries']) await db.schema.dropTable(table).execute();
}
