import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { CSRF_HEADER, SESSION_COOKIE } from '../../src/cloud/api.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { errorResponses } from '../schemas.js';
import type { TokenStore } from '../tokens.js';

/** How long the browser keeps the login (the token itself stays valid until revoked). */
const SESSION_MAX_AGE_S = 30 * 24 * 3600;
/** Login attempts per address and minute: tokens cannot be guessed, but a flood of them costs hashing and queries. */
const LOGINS_PER_MINUTE = 30;

/**
 * The dashboard's login on qwexcloud: the page sends a token once, the
 * server checks it and keeps it in an HttpOnly, SameSite=Strict cookie
 * (Secure over TLS), which the page's scripts cannot read and other sites'
 * pages cannot make the browser send. The API then accepts the cookie as it
 * accepts the bearer header (server/auth.ts).
 */
export const sessionRoutes: FastifyPluginAsync<{ tokens: TokenStore }> = async (app, { tokens }) => {
  await app.register(rateLimit, {
    max: LOGINS_PER_MINUTE,
    timeWindow: 60_000,
    errorResponseBuilder: (_request, context) => new QwexError(ErrorCode.RateLimited, `too many logins from this address: at most ${context.max} a minute`, { hint: `retry in ${context.after}` }),
  });

  app.post<{ Body: { token: string } }>('/session', {
    schema: {
      tags: ['server'],
      summary: 'Log the dashboard in: checks the token and keeps it in an HttpOnly cookie (send X-Qwex-CSRF: 1)',
      security: [],
      body: { type: 'object', additionalProperties: false, required: ['token'], properties: { token: { type: 'string', minLength: 1, maxLength: 256 } } },
      response: {
        200: { type: 'object', required: ['user', 'admin', 'tokenId'], properties: { user: { type: 'string' }, admin: { type: 'boolean' }, tokenId: { type: 'string' } } },
        ...errorResponses,
      },
    },
  }, async (request, reply) => {
    requireCsrfHeader(request);
    const principal = await tokens.authenticate(request.body.token.trim());
    if (!principal) throw new QwexError(ErrorCode.Unauthorized, 'the token is unknown or was revoked', { hint: 'ask an admin for a new one (`qwexcloud token create --user NAME`)' });
    void reply.setCookie(SESSION_COOKIE, request.body.token.trim(), cookieOptions(request, SESSION_MAX_AGE_S));
    return principal;
  });

  app.delete('/session', {
    schema: { tags: ['server'], summary: 'Log the dashboard out: forgets the cookie (the token stays valid)', security: [], response: { 204: { type: 'null' }, ...errorResponses } },
  }, async (request, reply) => {
    requireCsrfHeader(request);
    void reply.clearCookie(SESSION_COOKIE, cookieOptions(request, 0));
    return reply.status(204).send();
  });
};

/** The dashboard's cookie: never readable by scripts, never sent from another site, Secure when the page came over TLS. */
export function cookieOptions(request: FastifyRequest, maxAgeS: number): { httpOnly: true; sameSite: 'strict'; secure: boolean; path: string; maxAge?: number } {
  return { httpOnly: true, sameSite: 'strict', secure: request.protocol === 'https', path: '/', ...(maxAgeS > 0 ? { maxAge: maxAgeS } : {}) };
}

/** Login CSRF (another site logging a browser in as someone else) is refused as the API refuses CSRF. */
function requireCsrfHeader(request: FastifyRequest): void {
  if (request.headers[CSRF_HEADER] !== '1') {
    throw new QwexError(ErrorCode.Forbidden, `this request must carry the ${CSRF_HEADER}: 1 header`, { hint: 'it is sent by the dashboard\'s login page' });
  }
}
