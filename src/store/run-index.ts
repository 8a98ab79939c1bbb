import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { openSqlite, type SqlDatabase, type SqlStatement } from './sqlite.js';
import { ErrorCode, QwexError, errnoCode, redactSecrets } from '../errors.js';
import { displayCommand, type Run, type RunStatus } from '../run/model.js';

/** One row of the index: enough to list runs without opening their run.json. */
export interface RunSummary {
  id: string;
  project: string;
  runDir: string;
  status: RunStatus;
  name: string | null;
  command: string;
  backend: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  exitCode: number | null;
  signal: string | null;
  /** Set when the run's record could not be read when it was indexed (a torn or edited run.json): why. */
  problem?: string;
  /** The named job (qwex.yaml `jobs:`) the run executes. */
  recipe?: string;
  /** Its attempt number, for a run that may be retried (1 for the first). */
  attempt?: number;
  /** The workflow and stage it is a stage run of. */
  workflow?: string;
  stage?: string;
}

export interface ListQuery {
  /** Only runs of this project root; all projects when absent. */
  project?: string;
  statuses?: readonly RunStatus[];
  /** The newest `limit` runs; 0 or absent for all. */
  limit?: number;
  /** Only runs of this named job. */
  recipe?: string;
  /** Only runs that finished at this instant (an ISO time, as records write it) or later. */
  finishedSince?: string;
}

const SCHEMA_VERSION = 3;

/** Columns added after schema 2, for runs of named jobs, attempts and workflow stages. */
const V3_COLUMNS = ['recipe TEXT', 'attempt INTEGER', 'workflow TEXT', 'stage TEXT'];

const SCHEMA = `
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  run_dir TEXT NOT NULL,
  status TEXT NOT NULL,
  name TEXT,
  command TEXT NOT NULL,
  backend TEXT NOT NULL,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  exit_code INTEGER,
  signal TEXT,
  problem TEXT,
  recipe TEXT,
  attempt INTEGER,
  workflow TEXT,
  stage TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_project ON runs(project, id);
CREATE INDEX IF NOT EXISTS runs_active ON runs(status) WHERE status IN ('pending', 'running');
`;

interface Row {
  id: string;
  project: string;
  run_dir: string;
  status: RunStatus;
  name: string | null;
  command: string;
  backend: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  exit_code: number | null;
  signal: string | null;
  problem: string | null;
  recipe: string | null;
  attempt: number | null;
  workflow: string | null;
  stage: string | null;
}

/**
 * The per-user SQLite index of runs of every project. It is a cache of the
 * run.json files: anything in it can be rebuilt with `rebuild()`. Its owner
 * must call close().
 */
export class RunIndex {
  readonly path: string;
  private readonly db: SqlDatabase;
  private readonly upsertStmt: SqlStatement;
  private closed = false;

  private constructor(path: string, db: SqlDatabase) {
    this.path = path;
    this.db = db;
    this.upsertStmt = db.prepare(`
      INSERT INTO runs (id, project, run_dir, status, name, command, backend, created_at, started_at, finished_at, exit_code, signal, problem, recipe, attempt, workflow, stage)
      VALUES (@id, @project, @run_dir, @status, @name, @command, @backend, @created_at, @started_at, @finished_at, @exit_code, @signal, @problem, @recipe, @attempt, @workflow, @stage)
      ON CONFLICT(id) DO UPDATE SET
        project = excluded.project, run_dir = excluded.run_dir, status = excluded.status, name = excluded.name,
        command = excluded.command, backend = excluded.backend, created_at = excluded.created_at,
        started_at = excluded.started_at, finished_at = excluded.finished_at,
        exit_code = excluded.exit_code, signal = excluded.signal, problem = excluded.problem,
        recipe = excluded.recipe, attempt = excluded.attempt, workflow = excluded.workflow, stage = excluded.stage`);
  }

  static open(path: string): RunIndex {
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new QwexError(ErrorCode.StateUnwritable, `cannot create the state directory ${dirname(path)}: ${(error as Error).message}`, {
        hint: 'set QWEX_STATE_DIR to a writable directory',
        cause: error,
      });
    }
    if (isEmptyFile(path)) {
      // SQLite would take a 0-byte file for a new, empty index and `qwex ps` would say "no runs yet".
      throw new QwexError(ErrorCode.IndexError, `the run index ${path} is empty (0 bytes): it was truncated or overwritten`, {
        hint: 'run `qwex doctor --reindex` to rebuild it from the run directories',
      });
    }
    let db: SqlDatabase | undefined;
    try {
      db = openSqlite(path, 10_000);
      db.exec('PRAGMA synchronous = NORMAL');
      const version = (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
      if (version > SCHEMA_VERSION) {
        throw new QwexError(ErrorCode.IndexError, `the run index ${path} was written by a newer qwex (schema ${version})`, {
          hint: 'upgrade qwex, or move the file away and run `qwex doctor --reindex`',
        });
      }
      // An index of this schema is set up already (WAL mode is kept in the file): a look at it writes nothing.
      if (version !== SCHEMA_VERSION) {
        db.exec('PRAGMA journal_mode = WAL');
        db.exec(SCHEMA);
        // Schema 1 had no `problem` column, schema 2 none of V3_COLUMNS; CREATE TABLE IF NOT EXISTS kept the old table.
        if (version === 1) db.exec('ALTER TABLE runs ADD COLUMN problem TEXT');
        if (version >= 1 && version < 3) for (const column of V3_COLUMNS) db.exec(`ALTER TABLE runs ADD COLUMN ${column}`);
        db.exec('CREATE INDEX IF NOT EXISTS runs_by_recipe ON runs(project, recipe, id) WHERE recipe IS NOT NULL');
        db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      }
      return new RunIndex(path, db);
    } catch (error) {
      db?.close();
      if (error instanceof QwexError) throw error;
      const code = errnoCode(error) === 'EACCES' || /readonly|unable to open/i.test((error as Error).message)
        ? ErrorCode.StateUnwritable
        : ErrorCode.IndexError;
      throw new QwexError(code, `cannot open the run index ${path}: ${(error as Error).message}`, {
        hint: code === ErrorCode.StateUnwritable
          ? 'set QWEX_STATE_DIR to a writable directory'
          : 'move the file away and run `qwex doctor --reindex` to rebuild it from the run directories',
        cause: error,
      });
    }
  }

  upsert(run: Run, runDir: string): void {
    this.guard(() => this.upsertStmt.run(toRow(run, runDir)));
  }

  get(id: string): RunSummary | undefined {
    const row = this.guard(() => this.db.prepare('SELECT * FROM runs WHERE id = ?').get(id) as Row | undefined);
    return row && fromRow(row);
  }

  /** Ids starting with `prefix`, at most `limit` of them (ordered). */
  idsWithPrefix(prefix: string, limit = 10): RunSummary[] {
    const rows = this.guard(() =>
      this.db.prepare('SELECT * FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?').all(prefix, `${prefix}\u{ffff}`, limit) as Row[],
    );
    return rows.map(fromRow);
  }

  /** Runs matching the query, oldest first (the newest `limit` of them). */
  list(query: ListQuery = {}): RunSummary[] {
    const { sql, params } = listQuery(query);
    const rows = this.guard(() => this.db.prepare(sql).all(...params) as Row[]);
    return rows.reverse().map(fromRow);
  }

  /** Runs with these statuses that may be retried (they have an attempt number): what qwexd checks after a restart. */
  retriable(statuses: readonly RunStatus[]): RunSummary[] {
    const rows = this.guard(
      () => this.db.prepare(`SELECT * FROM runs WHERE attempt IS NOT NULL AND status IN (${statuses.map(() => '?').join(', ')}) ORDER BY id`).all(...statuses) as Row[],
    );
    return rows.map(fromRow);
  }

  /** SQLite's plan for a listing: how `qwex ps` stays fast with many runs (it must search an index, never sort). */
  explainList(query: ListQuery = {}): string[] {
    const { sql, params } = listQuery(query);
    return this.guard(() => (this.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map((r) => r.detail));
  }

  projects(): string[] {
    return this.guard(() => (this.db.prepare('SELECT DISTINCT project FROM runs').all() as { project: string }[]).map((r) => r.project));
  }

  /** Replaces every row of `projects` with `runs` and rows for the unreadable records, in one transaction. */
  replaceProjectsWithProblems(projects: readonly string[], runs: readonly { run: Run; runDir: string }[], unreadable: readonly UnreadableRun[]): void {
    this.guard(() =>
      this.db.transaction(() => {
        const del = this.db.prepare('DELETE FROM runs WHERE project = ?');
        for (const project of projects) del.run(project);
        for (const { run, runDir } of runs) this.upsertStmt.run(toRow(run, runDir));
        for (const bad of unreadable) this.upsertStmt.run(problemRow(bad));
      }),
    );
  }

  /** Inserts many rows in one transaction (fast bulk load). */
  upsertMany(runs: readonly { run: Run; runDir: string }[]): void {
    this.guard(() =>
      this.db.transaction(() => {
        for (const { run, runDir } of runs) this.upsertStmt.run(toRow(run, runDir));
      }),
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      if (error instanceof QwexError) throw error;
      throw new QwexError(ErrorCode.IndexError, `run index ${this.path}: ${(error as Error).message}`, {
        hint: 'if this persists, move the file away and run `qwex doctor --reindex`',
        cause: error,
      });
    }
  }
}

function listQuery(query: ListQuery): { sql: string; params: unknown[] } {
  const where: string[] = [];
  const params: unknown[] = [];
  if (query.project !== undefined) {
    where.push('project = ?');
    params.push(query.project);
  }
  if (query.statuses && query.statuses.length > 0) {
    where.push(`status IN (${query.statuses.map(() => '?').join(', ')})`);
    params.push(...query.statuses);
  }
  if (query.recipe !== undefined) {
    where.push('recipe = ?');
    params.push(query.recipe);
  }
  if (query.finishedSince !== undefined) {
    // Records write toISOString()'s one format, so the text order is the time order.
    where.push('finished_at >= ?');
    params.push(query.finishedSince);
  }
  params.push(query.limit && query.limit > 0 ? query.limit : -1);
  return { sql: `SELECT * FROM runs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`, params };
}

function toRow(run: Run, runDir: string): Row {
  return {
    id: run.id,
    project: run.project,
    run_dir: runDir,
    status: run.status,
    name: run.job.name ?? null,
    command: redactSecrets(displayCommand(run.job)),
    backend: run.backend.name,
    created_at: run.createdAt,
    started_at: run.startedAt ?? null,
    finished_at: run.finishedAt ?? null,
    exit_code: run.exitCode,
    signal: run.signal,
    problem: null,
    recipe: run.job.recipe?.name ?? null,
    attempt: run.job.attempt?.number ?? (run.job.retry ? 1 : null),
    workflow: run.job.workflow?.id ?? null,
    stage: run.job.workflow?.stage ?? null,
  };
}

/** A run directory whose record cannot be read, kept in the index so that listings show it as such. */
export interface UnreadableRun {
  id: string;
  project: string;
  runDir: string;
  message: string;
  /** What the index knew of it before, if anything. */
  previous?: RunSummary;
}

function problemRow(bad: UnreadableRun): Row {
  const p = bad.previous;
  return {
    id: bad.id,
    project: bad.project,
    run_dir: bad.runDir,
    // Terminal, so that no supervisor tries to take it over; listings show it as unreadable.
    status: 'lost',
    name: p?.name ?? null,
    command: p?.command ?? '',
    backend: p?.backend ?? '',
    created_at: p?.createdAt ?? new Date(0).toISOString(),
    started_at: p?.startedAt ?? null,
    finished_at: p?.finishedAt ?? null,
    exit_code: p?.exitCode ?? null,
    signal: p?.signal ?? null,
    problem: bad.message,
    recipe: p?.recipe ?? null,
    attempt: p?.attempt ?? null,
    workflow: p?.workflow ?? null,
    stage: p?.stage ?? null,
  };
}

function isEmptyFile(path: string): boolean {
  try {
    if (statSync(path).size !== 0) return false;
  } catch {
    return false; // no file yet: a new index
  }
  try {
    // In WAL mode a new database's first pages may still be in the log.
    return statSync(`${path}-wal`).size === 0;
  } catch {
    return true; // no log: the empty file is all there is
  }
}

function fromRow(row: Row): RunSummary {
  return {
    id: row.id,
    project: row.project,
    runDir: row.run_dir,
    status: row.status,
    name: row.name,
    command: row.command,
    backend: row.backend,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    exitCode: row.exit_code,
    signal: row.signal,
    ...(row.problem ? { problem: row.problem } : {}),
    ...(row.recipe === null ? {} : { recipe: row.recipe }),
    ...(row.attempt === null ? {} : { attempt: row.attempt }),
    ...(row.workflow === null ? {} : { workflow: row.workflow }),
    ...(row.stage === null ? {} : { stage: row.stage }),
  };
}
