import { loadServerConfig, type ConfigFlags } from '../config.js';
import { openDatabase } from '../db/connect.js';
import { migrateToLatest } from '../db/migrate.js';

/** `qwexcloud migrate`: brings the database to this version's schema (serve does it too, at start). */
export async function migrate(flags: ConfigFlags): Promise<number> {
  const config = loadServerConfig(flags);
  const database = await openDatabase(config.db);
  try {
    const applied = await migrateToLatest(database);
    process.stderr.write(applied.length === 0 ? `qwexcloud: ${database.where} is up to date\n` : `qwexcloud: applied ${applied.join(', ')} to ${database.where}\n`);
    return 0;
  } finally {
    await database.close();
  }
}
