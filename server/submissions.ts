import { createHash } from 'node:crypto';
import type { Db } from './db/connect.js';

export interface Submission {
  key: string;
  fingerprint: string;
  /** The run the submit created; null while it is being accepted, or when a crash interrupted it. */
  runId: string | null;
  createdAt: string;
}

/**
 * Idempotency keys of submits, per user, in SQL (so that they outlive a
 * restart): a key is reserved before its run is created and completed with
 * the run's id right after, so the same key never creates a second run.
 */
export class SubmissionTable {
  constructor(private readonly database: Db) {}

  async find(user: string, key: string): Promise<Submission | undefined> {
    const row = await this.database.db.selectFrom('submissions').selectAll().where('user_name', '=', user).where('key', '=', key).executeTakeFirst();
    return row && { key: row.key, fingerprint: row.fingerprint, runId: row.run_id, createdAt: row.created_at };
  }

  /** Takes the key for a submit about to be accepted. False when it was taken already (by this request or another). */
  async reserve(user: string, key: string, fingerprint: string): Promise<boolean> {
    const result = await this.database.db
      .insertInto('submissions')
      .values({ user_name: user, key, fingerprint, run_id: null, created_at: new Date().toISOString() })
      .onConflict((oc) => oc.columns(['user_name', 'key']).doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0) > 0;
  }

  async complete(user: string, key: string, runId: string): Promise<void> {
    await this.database.db.updateTable('submissions').set({ run_id: runId }).where('user_name', '=', user).where('key', '=', key).execute();
  }

  /** Gives a key back after a submit that created nothing (a bad request): the same key may be tried again. */
  async release(user: string, key: string): Promise<void> {
    await this.database.db.deleteFrom('submissions').where('user_name', '=', user).where('key', '=', key).where('run_id', 'is', null).execute();
  }
}

/** What makes two submits "the same request": the request's JSON with its keys in a fixed order. */
export function fingerprintOf(request: unknown): string {
  return createHash('sha256').update(canonicalJson(request)).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
