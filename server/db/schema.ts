import type { Insertable, Selectable } from 'kysely';
import type { NotifyTables } from '../../src/notify/journal.js';

/**
 * The one typed description of qwexcloud's tables, for both SQLite and
 * PostgreSQL. Times are ISO 8601 text (UTC, `Date.toISOString()`): they sort
 * and compare as text in both, with no driver-specific date types. Booleans
 * are 0/1 integers for the same reason. Migrations (db/migrations/) create
 * exactly this.
 */
export interface Database extends NotifyTables {
  users: UsersTable;
  tokens: TokensTable;
  runs: RunsTable;
  artifacts: ArtifactsTable;
  blobs: BlobsTable;
  submissions: SubmissionsTable;
  cluster_status: ClusterStatusTable;
}

/** The last health check of each cluster target (kept after it leaves the configuration). */
export interface ClusterStatusTable {
  name: string;
  healthy: number;
  /** Why it is unhealthy (null when healthy). */
  reason: string | null;
  /** When it became what it is now (healthy or not). */
  since: string;
  checked_at: string;
  /** JSON: [{ name, pending }] — Kueue's pending workloads per LocalQueue, null where Kueue does not say. */
  queues: string;
}

export interface UsersTable {
  name: string;
  admin: number;
  created_at: string;
}

export interface TokensTable {
  /** Public id (tok_...), shown in listings and used to revoke; the token itself is never stored. */
  id: string;
  user_name: string;
  /** sha256 of the token, hex. */
  hash: string;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

export interface RunsTable {
  id: string;
  user_name: string;
  target: string;
  backend: string;
  cluster: string | null;
  queue: string | null;
  name: string | null;
  command: string;
  status: string;
  exit_code: number | null;
  signal: string | null;
  end_reason: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
  /** The run directory on the server (logs live there); never shown to clients. */
  run_dir: string;
  /** run.json as last seen. */
  record: string;
  /** 1 once the run ended and its artifacts are in the content store and the artifacts table. */
  artifacts_collected: number;
  /** sha256 of its artifacts.json in the content store (what was skipped and why), once collected. */
  artifacts_manifest: string | null;
}

export interface ArtifactsTable {
  run_id: string;
  path: string;
  size: number;
  sha256: string;
}

export interface BlobsTable {
  sha256: string;
  size: number;
  created_at: string;
}

/** A client's idempotency key for a submit, per user, and the run it created (null while being accepted). */
export interface SubmissionsTable {
  user_name: string;
  key: string;
  /** sha256 of the request as submitted: the same key with another request is refused. */
  fingerprint: string;
  run_id: string | null;
  created_at: string;
}

export type RunRow = Selectable<RunsTable>;
export type NewRunRow = Insertable<RunsTable>;
export type TokenRow = Selectable<TokensTable>;
