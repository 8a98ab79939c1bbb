import type BetterSqlite3 from 'better-sqlite3';
import type * as Pg from 'pg';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { Kysely, PostgresDialect, SqliteDialect, type Dialect } from 'kysely';
import { ErrorCode, QwexError, redactSecrets } from '../../src/errors.js';
import type { Database } from './schema.js';

export type DbKind = 'sqlite' | 'postgres';

export interface Db {
  kind: DbKind;
  db: Kysely<Database>;
  /** Where it is, for messages: the SQLite path, or the PostgreSQL URL without its password. */
  where: string;
  close(): Promise<void>;
}

const require = createRequire(import.meta.url);

/**
 * Opens the database named by `sqlite:PATH` or `postgres://...`. The dialect
 * is chosen here, once; every query is written against the same typed
 * Kysely<Database> and never asks which one it got.
 */
export async function openDatabase(url: string): Promise<Db> {
  const kind: DbKind = url.startsWith('sqlite:') ? 'sqlite' : 'postgres';
  const where = kind === 'sqlite' ? url.slice('sqlite:'.length) : redactSecrets(url);
  let dialect: Dialect;
  if (kind === 'sqlite') {
    const path = url.slice('sqlite:'.length);
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      const Sqlite = require('better-sqlite3') as typeof BetterSqlite3;
      const database = new Sqlite(path, { timeout: 10_000 });
      // WAL: readers (the API) never wait for the writer (run changes); a CLI (token create) may write meanwhile.
      database.pragma('journal_mode = WAL');
      database.pragma('synchronous = NORMAL');
      database.pragma('foreign_keys = ON');
      dialect = new SqliteDialect({ database });
    } catch (error) {
      throw new QwexError(ErrorCode.StateUnwritable, `cannot open the database ${path}: ${(error as Error).message}`, {
        hint: 'check that the data directory is writable (--data), or name another file with --db sqlite:PATH',
      });
    }
  } else {
    const pg = require('pg') as typeof Pg;
    const pool = new pg.Pool({
      connectionString: url,
      max: 10,
      // bigint (sizes) as a JS number: exact up to 2^53 bytes, far above any file.
      types: { getTypeParser: (oid: number, format?: 'text' | 'binary') => (oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) },
    } as Pg.PoolConfig);
    // An idle client that loses its server must not crash the process; the next query reports it.
    pool.on('error', () => {});
    dialect = new PostgresDialect({ pool });
  }
  const db = new Kysely<Database>({ dialect });
  if (kind === 'postgres') {
    try {
      await db.selectFrom('users').select('name').limit(0).execute().catch(async (error: unknown) => {
        // "relation does not exist" means a reachable server without our tables yet (migrate creates them).
        if ((error as { code?: string }).code !== '42P01') throw error;
      });
    } catch (error) {
      await db.destroy();
      throw new QwexError(ErrorCode.StateUnwritable, `cannot connect to the database ${where}: ${redactSecrets((error as Error).message)}`, {
        hint: 'check that PostgreSQL runs, that the URL is right, and that the user may connect',
      });
    }
  }
  let closed: Promise<void> | undefined;
  return { kind, db, where, close: () => (closed ??= db.destroy()) };
}
