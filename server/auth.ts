import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ErrorCode, QwexError } from '../src/errors.js';
import type { Principal, TokenStore } from './tokens.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is asking; set by the authentication hook on every route that requires a token. */
    principal: Principal;
  }
}

/**
 * Requires a valid bearer token on every route of the context it is added
 * to: none, a malformed header, an unknown token and a revoked one are all
 * 401, with a message that never repeats the token.
 */
export function requireToken(scope: FastifyInstance, tokens: TokenStore): void {
  scope.decorateRequest('principal', undefined as unknown as Principal);
  scope.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers.authorization;
    const refuse = (message: string, hint: string): never => {
      void reply.header('www-authenticate', 'Bearer realm="qwexcloud"');
      throw new QwexError(ErrorCode.Unauthorized, message, { hint });
    };
    if (header === undefined || header === '') refuse('no token: this request needs an Authorization: Bearer TOKEN header', 'an admin creates tokens with `qwexcloud token create --user NAME`');
    const match = /^Bearer +(\S+) *$/i.exec(header!);
    if (!match) refuse('the Authorization header is not of the form "Bearer TOKEN"', 'send Authorization: Bearer qwx_...');
    const principal = await tokens.authenticate(match![1]!);
    if (!principal) refuse('the token is unknown or was revoked', 'ask an admin for a new one (`qwexcloud token create --user NAME`)');
    request.principal = principal!;
  });
}
