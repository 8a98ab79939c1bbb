import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';

/**
 * The SQLite the run index runs on: Node's own node:sqlite where this Node
 * has it unflagged (22.13 and newer: it is part of the binary, so a
 * `qwex ps` loads nothing more), else the better-sqlite3 addon (Node 20,
 * measured at about 9 ms of CPU per command start to load and open on the
 * development machine, where node:sqlite costs none). QWEX_SQLITE=addon
 * forces the addon. Both are synchronous and speak the same SQL; this is the
 * small part of their APIs that the index uses.
 */
export interface SqlStatement {
  /** Binds positional values, or one object of named values (`@name` in the SQL, `name` as the key). */
  run(...params: unknown[]): unknown;
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}

export interface SqlDatabase {
  readonly driver: 'node:sqlite' | 'better-sqlite3';
  prepare(sql: string): SqlStatement;
  exec(sql: string): void;
  /** Runs `fn` in one transaction: committed when it returns, rolled back when it throws. Not nested. */
  transaction<T>(fn: () => T): T;
  close(): void;
}

/** Opens (creating it if need be) the database at `path`; a busy database is waited for up to `busyTimeoutMs`. */
export function openSqlite(path: string, busyTimeoutMs: number): SqlDatabase {
  const native = process.env.QWEX_SQLITE === 'addon' ? undefined : nodeSqlite();
  const db = native ? openNative(native, path) : openAddon(path, busyTimeoutMs);
  try {
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
  } catch (error) {
    db.close();
    throw error;
  }
  return db;
}

interface NodeSqliteModule {
  DatabaseSync: new (path: string) => {
    prepare(sql: string): SqlStatement;
    exec(sql: string): void;
    close(): void;
  };
}

let nodeSqliteModule: NodeSqliteModule | null | undefined;

/** node:sqlite when this Node has it without a flag; its "experimental" warning is not the user's concern. */
function nodeSqlite(): NodeSqliteModule | undefined {
  if (nodeSqliteModule !== undefined) return nodeSqliteModule ?? undefined;
  const getBuiltin = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
  nodeSqliteModule = null;
  if (typeof getBuiltin !== 'function') return undefined;
  const emitWarning = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const text = typeof warning === 'string' ? warning : warning.message;
    if (/SQLite/i.test(text)) return;
    (emitWarning as (...args: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    nodeSqliteModule = (getBuiltin('node:sqlite') as NodeSqliteModule | undefined) ?? null;
  } catch {
    nodeSqliteModule = null; // behind a flag in this version (22.5 to 22.12)
  } finally {
    process.emitWarning = emitWarning;
  }
  return nodeSqliteModule ?? undefined;
}

function openNative(sqlite: NodeSqliteModule, path: string): SqlDatabase {
  const db = new sqlite.DatabaseSync(path);
  return {
    driver: 'node:sqlite',
    prepare: (sql) => db.prepare(sql),
    exec: (sql) => db.exec(sql),
    transaction: <T>(fn: () => T): T => {
      db.exec('BEGIN');
      let result: T;
      try {
        result = fn();
      } catch (error) {
        db.exec('ROLLBACK');
        throw error;
      }
      db.exec('COMMIT');
      return result;
    },
    close: () => db.close(),
  };
}

let addonPath: string | false | undefined;

/**
 * better-sqlite3, loaded on first use. Its addon is handed to it by path
 * where the build put it, which spares the search of the `bindings`
 * package; elsewhere that search finds it.
 */
function openAddon(path: string, busyTimeoutMs: number): SqlDatabase {
  const require = createRequire(import.meta.url);
  const Sqlite = require('better-sqlite3') as typeof BetterSqlite3;
  addonPath ??= builtAddon(require);
  const db = new Sqlite(path, { timeout: busyTimeoutMs, ...(addonPath ? { nativeBinding: addonPath } : {}) });
  return {
    driver: 'better-sqlite3',
    prepare: (sql) => db.prepare(sql),
    exec: (sql) => void db.exec(sql),
    transaction: <T>(fn: () => T): T => db.transaction(fn)(),
    close: () => void db.close(),
  };
}

function builtAddon(require: NodeJS.Require): string | false {
  try {
    const path = join(dirname(require.resolve('better-sqlite3/package.json')), 'build', 'Release', 'better_sqlite3.node');
    return existsSync(path) ? path : false;
  } catch {
    return false; // not found where the build puts it: the `bindings` search finds it elsewhere
  }
}
