import { sql, type Transaction } from 'kysely';
import type { ArtifactEntry, CloudRun, CloudRunDetail, RunQuery } from '../src/cloud/api.js';
import { ErrorCode, QwexError, redactEnv } from '../src/errors.js';
import type { Run, RunStatus } from '../src/run/model.js';
import type { Db } from './db/connect.js';
import type { Database, NewRunRow, RunRow } from './db/schema.js';
import type { Principal } from './tokens.js';

export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 500;

/**
 * The runs, artifacts of ended runs, in SQL: what the API lists and shows.
 * Every query that reads a run takes the principal asking and sees only
 * what it may (its own runs; an admin's every run), so that another user's
 * run is indistinguishable from one that does not exist.
 */
export class RunTable {
  constructor(private readonly database: Db) {}

  async upsert(row: NewRunRow, artifacts?: { files: ArtifactEntry[]; manifest: string | null }): Promise<void> {
    await this.database.db.transaction().execute(async (trx) => {
      await upsertRow(trx, row);
      if (artifacts) {
        for (let i = 0; i < artifacts.files.length; i += 200) {
          const values = artifacts.files.slice(i, i + 200).map((f) => ({ run_id: row.id, path: f.path, size: f.size, sha256: f.sha256 }));
          await trx.insertInto('artifacts').values(values).onConflict((oc) => oc.columns(['run_id', 'path']).doNothing()).execute();
        }
      }
    });
  }

  async get(principal: Principal, id: string): Promise<RunRow | undefined> {
    let query = this.database.db.selectFrom('runs').selectAll().where('id', '=', id);
    if (!principal.admin) query = query.where('user_name', '=', principal.user);
    return query.executeTakeFirst();
  }

  /** A page of runs, newest first, keyset-paged on id. Every filter value is a bound parameter. */
  async list(principal: Principal, q: RunQuery): Promise<{ rows: RunRow[]; nextCursor: string | null }> {
    const limit = Math.min(Math.max(q.limit ?? DEFAULT_PAGE, 1), MAX_PAGE);
    let query = this.database.db.selectFrom('runs').selectAll();
    if (!principal.admin && q.user !== undefined && q.user !== principal.user) {
      throw new QwexError(ErrorCode.Forbidden, 'only an admin may list another user\'s runs', { hint: 'leave out user: you see your own runs' });
    }
    const user = principal.admin ? q.user : principal.user;
    if (user !== undefined) query = query.where('user_name', '=', user);
    if (q.status && q.status.length > 0) query = query.where('status', 'in', q.status);
    if (q.backend !== undefined) query = query.where('backend', '=', q.backend);
    if (q.target !== undefined) query = query.where('target', '=', q.target);
    if (q.createdAfter !== undefined) query = query.where('created_at', '>=', q.createdAfter);
    if (q.createdBefore !== undefined) query = query.where('created_at', '<', q.createdBefore);
    if (q.idPrefix !== undefined) query = query.where(sql<boolean>`${sql.ref('id')} like ${`${escapeLike(q.idPrefix.toLowerCase())}%`} escape '\\'`);
    if (q.q !== undefined && q.q !== '') {
      const pattern = `%${escapeLike(q.q.toLowerCase())}%`;
      query = query.where((eb) =>
        eb.or([
          sql<boolean>`lower(${sql.ref('name')}) like ${pattern} escape '\\'`,
          sql<boolean>`lower(${sql.ref('command')}) like ${pattern} escape '\\'`,
        ]),
      );
    }
    if (q.cursor !== undefined) query = query.where('id', '<', q.cursor);
    const rows = await query.orderBy('id', 'desc').limit(limit + 1).execute();
    const more = rows.length > limit;
    const page = more ? rows.slice(0, limit) : rows;
    return { rows: page, nextCursor: more ? page[page.length - 1]!.id : null };
  }

  async artifacts(runId: string): Promise<ArtifactEntry[]> {
    const rows = await this.database.db.selectFrom('artifacts').select(['path', 'size', 'sha256']).where('run_id', '=', runId).orderBy('path').execute();
    return rows.map((r) => ({ path: r.path, size: Number(r.size), sha256: r.sha256 }));
  }

  async artifact(runId: string, path: string): Promise<ArtifactEntry | undefined> {
    const row = await this.database.db.selectFrom('artifacts').select(['path', 'size', 'sha256']).where('run_id', '=', runId).where('path', '=', path).executeTakeFirst();
    return row && { path: row.path, size: Number(row.size), sha256: row.sha256 };
  }

  /** Rows whose story may not be complete in SQL: active runs, and ended runs whose artifacts were not collected yet. */
  async unsettled(): Promise<RunRow[]> {
    return this.database.db
      .selectFrom('runs')
      .selectAll()
      .where((eb) => eb.or([eb('status', 'in', ['pending', 'running']), eb('artifacts_collected', '=', 0)]))
      .orderBy('id')
      .execute();
  }
}

async function upsertRow(trx: Transaction<Database>, row: NewRunRow): Promise<void> {
  const { id: _id, user_name: _user, target: _target, created_at: _created, ...changing } = row;
  await trx.insertInto('runs').values(row).onConflict((oc) => oc.column('id').doUpdateSet(changing)).execute();
}

/** `%`, `_` and the escape character itself, made literal in a LIKE pattern. */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

export function toCloudRun(row: RunRow): CloudRun {
  return {
    id: row.id,
    user: row.user_name,
    target: row.target,
    backend: row.backend,
    cluster: row.cluster,
    queue: row.queue,
    name: row.name,
    command: row.command,
    status: row.status as RunStatus,
    exitCode: row.exit_code,
    signal: row.signal,
    endReason: row.end_reason,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    updatedAt: row.updated_at,
  };
}

export function toCloudRunDetail(row: RunRow): CloudRunDetail {
  return { ...toCloudRun(row), record: publicRecord(JSON.parse(row.record) as Run) };
}

/** The record as clients see it: secret-looking variables redacted (as `qwex status` shows them). */
export function publicRecord(run: Run): Run {
  return {
    ...run,
    job: {
      ...run.job,
      env: redactEnv(run.job.env),
      ...(run.job.container ? { container: { ...run.job.container, env: redactEnv(run.job.container.env) } } : {}),
    },
  };
}
