import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CSRF_HEADER, SESSION_COOKIE } from '../src/cloud/api.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import type { Principal, TokenStore } from './tokens.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is asking; set by the authentication hook on every route that requires a token. */
    principal: Principal;
  }
}

/** Methods that change nothing: a cookie alone may authenticate them. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** How a server recognises its callers. */
export interface Credentials {
  /** The principal a token (from the header) or a cookie value stands for; undefined when unknown or revoked. */
  lookup(secret: string): Promise<Principal | undefined>;
  /** Whether `Authorization: Bearer` is accepted (qwexcloud's clients); the cookie always is. */
  bearer: boolean;
  /** The name of the cookie the dashboard's session is kept in (HttpOnly, set by the login). */
  cookie: string;
  /** What to say to a caller with no credentials at all, and how to get some. */
  missing: { message: string; hint: string };
}

/** qwexcloud's credentials: a token, as a bearer header or in the dashboard's cookie. */
export function tokenCredentials(tokens: TokenStore): Credentials {
  return {
    lookup: (token) => tokens.authenticate(token),
    bearer: true,
    cookie: SESSION_COOKIE,
    missing: { message: 'no token: this request needs an Authorization: Bearer TOKEN header (or the dashboard\'s login cookie)', hint: 'an admin creates tokens with `qwexcloud token create --user NAME`' },
  };
}

/**
 * Requires valid credentials on every route of the context it is added to:
 * none, a malformed header, an unknown token and a revoked one are all 401,
 * with a message that never repeats the token. A request authenticated by
 * the cookie alone that changes anything (not GET/HEAD) must also carry the
 * X-Qwex-CSRF header, which a page of another site cannot make a browser
 * send (no CORS is allowed here): 403 otherwise. The cookie is also
 * SameSite=Strict, so this is a second wall, not the only one.
 */
export function requireToken(scope: FastifyInstance, credentials: Credentials): void {
  scope.decorateRequest('principal', undefined as unknown as Principal);
  scope.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const refuse = (message: string, hint: string): never => {
      void reply.header('www-authenticate', 'Bearer realm="qwex"');
      throw new QwexError(ErrorCode.Unauthorized, message, { hint });
    };
    const header = request.headers.authorization;
    const cookie = request.cookies?.[credentials.cookie];
    let principal: Principal | undefined;
    if (credentials.bearer && header !== undefined && header !== '') {
      const match = /^Bearer +(\S+) *$/i.exec(header);
      if (!match) refuse('the Authorization header is not of the form "Bearer TOKEN"', 'send Authorization: Bearer qwx_...');
      principal = await credentials.lookup(match![1]!);
      if (!principal) refuse('the token is unknown or was revoked', 'ask an admin for a new one (`qwexcloud token create --user NAME`)');
    } else if (cookie !== undefined && cookie !== '') {
      principal = await credentials.lookup(cookie);
      if (!principal) refuse('the session is unknown, expired or was revoked', 'log in again');
      if (!SAFE_METHODS.has(request.method) && request.headers[CSRF_HEADER] !== '1') {
        throw new QwexError(ErrorCode.Forbidden, `a request authenticated by the dashboard's cookie that changes something must carry the ${CSRF_HEADER}: 1 header`, {
          hint: 'programs send Authorization: Bearer TOKEN instead of the cookie',
        });
      }
    } else {
      refuse(credentials.missing.message, credentials.missing.hint);
    }
    request.principal = principal!;
  });
}
