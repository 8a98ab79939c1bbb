import { Migrator, type Migration, type MigrationProvider, type MigrationResultSet } from 'kysely';
import { ErrorCode, QwexError } from '../../src/errors.js';
import type { Db } from './connect.js';
import * as initial from './migrations/0001-initial.js';
import * as submissions from './migrations/0002-submissions.js';
import * as notifyClusters from './migrations/0003-notify-clusters.js';

/**
 * The migrations, in order, by name. Listed here rather than found on disk
 * (Kysely's FileMigrationProvider) so that they survive bundling; a new one
 * is a new module and a new line, never an edit of an applied one.
 */
const MIGRATIONS: Record<string, Migration> = {
  '0001-initial': initial,
  '0002-submissions': submissions,
  '0003-notify-clusters': notifyClusters,
};

const provider: MigrationProvider = { getMigrations: () => Promise.resolve(MIGRATIONS) };

/** Brings the database to the latest schema. Returns the names applied now (none when it was current). */
export async function migrateToLatest(database: Db): Promise<string[]> {
  const migrator = new Migrator({ db: database.db, provider });
  let result: MigrationResultSet;
  try {
    result = await migrator.migrateToLatest();
  } catch (error) {
    throw new QwexError(ErrorCode.StateUnwritable, `cannot migrate the database ${database.where}: ${(error as Error).message}`);
  }
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName;
    const message = result.error instanceof Error ? result.error.message : String(result.error);
    const newer = /corrupted migrations/.test(message);
    throw new QwexError(ErrorCode.StateUnwritable, `cannot migrate the database ${database.where}${failed ? ` (${failed})` : ''}: ${message}`, {
      ...(newer ? { hint: 'the database was migrated by a newer qwexcloud: upgrade this one' } : {}),
    });
  }
  return (result.results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
