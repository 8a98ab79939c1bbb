import { createHash, randomBytes } from 'node:crypto';
import { TOKEN_PREFIX } from '../src/cloud/api.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import type { Db } from './db/connect.js';

/**
 * Users and their bearer tokens. A token is `qwx_` and 32 random bytes in
 * base64url; only its sha256 is stored, so a copy of the database lets no
 * one in. Revoked tokens stay listed (who had access, until when).
 */
export interface Principal {
  user: string;
  admin: boolean;
  tokenId: string;
}

export interface TokenInfo {
  id: string;
  user: string;
  admin: boolean;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

const USER_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** last_used_at is written at most this often per token: a busy client must not turn every request into a write. */
const LAST_USED_RESOLUTION_MS = 60_000;

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function checkUserName(name: string): void {
  if (!USER_NAME.test(name)) {
    throw new QwexError(ErrorCode.Usage, `"${name}" is not a user name`, { hint: 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit (at most 63)' });
  }
}

export class TokenStore {
  private readonly lastUsedWritten = new Map<string, number>();

  constructor(private readonly database: Db) {}

  /** Creates the user if new (an admin if `admin`; an existing user is made one), and a token for them. Returns the token, shown once. */
  async create(user: string, options: { admin?: boolean } = {}): Promise<{ token: string; info: TokenInfo }> {
    checkUserName(user);
    const now = new Date().toISOString();
    const token = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
    const id = `tok_${randomBytes(6).toString('hex')}`;
    const admin = options.admin === true;
    await this.database.db.transaction().execute(async (trx) => {
      await trx.insertInto('users').values({ name: user, admin: admin ? 1 : 0, created_at: now }).onConflict((oc) => oc.column('name').doNothing()).execute();
      if (admin) await trx.updateTable('users').set({ admin: 1 }).where('name', '=', user).execute();
      await trx.insertInto('tokens').values({ id, user_name: user, hash: hashToken(token), created_at: now, last_used_at: null, revoked_at: null }).execute();
    });
    const row = await this.database.db.selectFrom('users').select('admin').where('name', '=', user).executeTakeFirstOrThrow();
    return { token, info: { id, user, admin: row.admin === 1, createdAt: now, lastUsedAt: null, revokedAt: null } };
  }

  async list(): Promise<TokenInfo[]> {
    const rows = await this.database.db
      .selectFrom('tokens')
      .innerJoin('users', 'users.name', 'tokens.user_name')
      .select(['tokens.id', 'tokens.user_name', 'users.admin', 'tokens.created_at', 'tokens.last_used_at', 'tokens.revoked_at'])
      .orderBy('tokens.created_at')
      .orderBy('tokens.id')
      .execute();
    return rows.map((r) => ({ id: r.id, user: r.user_name, admin: r.admin === 1, createdAt: r.created_at, lastUsedAt: r.last_used_at, revokedAt: r.revoked_at }));
  }

  /** Revokes one token by id, or every active token of a user by name. Returns the ids revoked. */
  async revoke(idOrUser: string): Promise<string[]> {
    const now = new Date().toISOString();
    const byId = await this.database.db.selectFrom('tokens').select(['id', 'revoked_at']).where('id', '=', idOrUser).executeTakeFirst();
    let ids: string[];
    if (byId) {
      ids = byId.revoked_at === null ? [byId.id] : [];
    } else {
      const user = await this.database.db.selectFrom('users').select('name').where('name', '=', idOrUser).executeTakeFirst();
      if (!user) {
        throw new QwexError(ErrorCode.NotFound, `no token or user "${idOrUser}"`, { hint: '`qwexcloud token list` shows token ids and users' });
      }
      ids = (await this.database.db.selectFrom('tokens').select('id').where('user_name', '=', idOrUser).where('revoked_at', 'is', null).execute()).map((r) => r.id);
    }
    if (ids.length > 0) await this.database.db.updateTable('tokens').set({ revoked_at: now }).where('id', 'in', ids).execute();
    return ids;
  }

  /** The principal a token stands for, or undefined for an unknown or revoked one. Records when it was last used. */
  async authenticate(token: string): Promise<Principal | undefined> {
    if (!token.startsWith(TOKEN_PREFIX) || token.length > 200) return undefined;
    const row = await this.database.db
      .selectFrom('tokens')
      .innerJoin('users', 'users.name', 'tokens.user_name')
      .select(['tokens.id', 'tokens.user_name', 'tokens.revoked_at', 'users.admin'])
      .where('tokens.hash', '=', hashToken(token))
      .executeTakeFirst();
    if (!row || row.revoked_at !== null) return undefined;
    const now = Date.now();
    if (now - (this.lastUsedWritten.get(row.id) ?? 0) >= LAST_USED_RESOLUTION_MS) {
      this.lastUsedWritten.set(row.id, now);
      await this.database.db.updateTable('tokens').set({ last_used_at: new Date(now).toISOString() }).where('id', '=', row.id).execute();
    }
    return { user: row.user_name, admin: row.admin === 1, tokenId: row.id };
  }
}
