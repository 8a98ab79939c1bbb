import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ErrorCode, QwexError, redactSecrets, type ErrorCode as Code } from '../src/errors.js';

/** The HTTP status of each stable error code; anything not listed is the server's fault (500). */
const STATUS: Partial<Record<Code, number>> = {
  [ErrorCode.Usage]: 400,
  [ErrorCode.ConfigInvalid]: 400,
  [ErrorCode.RunAmbiguous]: 400,
  [ErrorCode.BlobMissing]: 400,
  [ErrorCode.Unauthorized]: 401,
  [ErrorCode.Forbidden]: 403,
  [ErrorCode.RunNotFound]: 404,
  [ErrorCode.NotFound]: 404,
  [ErrorCode.RunNotActive]: 409,
  [ErrorCode.InvalidTransition]: 409,
  // An interrupted keyed submit: the key cannot be used again (see RunService.submitOnce).
  [ErrorCode.RunLost]: 409,
  [ErrorCode.TooLarge]: 413,
  [ErrorCode.RateLimited]: 429,
  [ErrorCode.BackendUnavailable]: 503,
};

export function statusOf(code: Code): number {
  return STATUS[code] ?? 500;
}

/** Fastify's own failures (bad JSON, a body over the limit, a wrong content type) as qwex errors. */
function fromFastify(error: FastifyError): QwexError | undefined {
  if (error.validation) {
    // Fastify's message names the part and the key: "body/job must have required property 'command'".
    return new QwexError(ErrorCode.Usage, error.message, {
      hint: 'see the API reference: GET /v1/openapi.json (or docs/cloud-api.json)',
    });
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new QwexError(ErrorCode.TooLarge, 'the request body is larger than the server accepts for this route', { hint: 'send less (a smaller workspace manifest, fewer hashes per request)' });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new QwexError(ErrorCode.Usage, `unsupported content type for this route: ${error.message.replace(/^Unsupported Media Type:?\s*/, '') || 'none'}`, { hint: 'send application/json (application/octet-stream for blob uploads)' });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new QwexError(ErrorCode.Usage, 'the request body is empty; this route expects JSON');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new QwexError(ErrorCode.Usage, 'the request body does not match its Content-Length');
    default:
      break;
  }
  if (error instanceof SyntaxError || error.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return new QwexError(ErrorCode.Usage, `the request body is not valid JSON: ${error.message}`);
  }
  if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
    return new QwexError(error.statusCode === 413 ? ErrorCode.TooLarge : ErrorCode.Usage, error.message);
  }
  return undefined;
}

/**
 * Every error leaves the server as `{ error: { code, message, hint? } }`
 * with the status of its code. Unexpected errors are logged in full and
 * answered with a generic message and the request id to find them by.
 */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const qe = error instanceof QwexError ? error : fromFastify(error);
    if (!qe) {
      request.log.error({ err: error }, 'unhandled error');
      return reply.status(500).send({ error: { code: ErrorCode.Internal, message: `internal server error (request ${request.id}; see the server's log)` } });
    }
    const status = statusOf(qe.code);
    if (status >= 500) request.log.error({ err: error }, qe.message);
    const body = qe.toJSON();
    return reply.status(status).send({ error: { ...body, message: redactSecrets(body.message) } });
  });
  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send({ error: { code: ErrorCode.NotFound, message: `no route ${request.method} ${request.url.split('?')[0]}`, hint: 'the API is under /v1; GET /v1/openapi.json describes it' } }),
  );
}
