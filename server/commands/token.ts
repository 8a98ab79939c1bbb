import { loadServerConfig, type ConfigFlags } from '../config.js';
import { openDatabase, type Db } from '../db/connect.js';
import { migrateToLatest } from '../db/migrate.js';
import { TokenStore, type TokenInfo } from '../tokens.js';

/**
 * `qwexcloud token create|list|revoke`: works on the database directly (the
 * server may run or not). `create` prints the token alone on stdout, once:
 * it is not stored, only its hash.
 */
async function withTokens<T>(flags: ConfigFlags, fn: (tokens: TokenStore) => Promise<T>): Promise<T> {
  const config = loadServerConfig(flags);
  const database: Db = await openDatabase(config.db);
  try {
    await migrateToLatest(database);
    return await fn(new TokenStore(database));
  } finally {
    await database.close();
  }
}

export async function tokenCreate(flags: ConfigFlags & { user: string; admin?: boolean }): Promise<number> {
  const { token, info } = await withTokens(flags, (tokens) => tokens.create(flags.user, { admin: flags.admin === true }));
  process.stdout.write(`${token}\n`);
  process.stderr.write(`qwexcloud: token ${info.id} for ${info.user}${info.admin ? ' (admin)' : ''}; it is shown only now\n`);
  return 0;
}

export async function tokenList(flags: ConfigFlags & { json?: boolean }): Promise<number> {
  const list = await withTokens(flags, (tokens) => tokens.list());
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    return 0;
  }
  const rows: string[][] = [['ID', 'USER', 'ADMIN', 'CREATED', 'LAST USED', 'REVOKED'], ...list.map(row)];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) process.stdout.write(`${r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
  return 0;
}

export async function tokenRevoke(flags: ConfigFlags & { idOrUser: string }): Promise<number> {
  const ids = await withTokens(flags, (tokens) => tokens.revoke(flags.idOrUser));
  process.stderr.write(ids.length === 0 ? `qwexcloud: nothing to revoke (already revoked)\n` : `qwexcloud: revoked ${ids.join(', ')}\n`);
  return 0;
}

function row(t: TokenInfo): string[] {
  return [t.id, t.user, t.admin ? 'yes' : '', t.createdAt, t.lastUsedAt ?? '-', t.revokedAt ?? ''];
}
