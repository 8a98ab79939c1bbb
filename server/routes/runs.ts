import type { FastifyPluginAsync } from 'fastify';
import { IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN, type RunQuery, type SubmitRequest } from '../../src/cloud/api.js';
import type { RunStatus } from '../../src/run/model.js';
import { RUN_STATUSES } from '../../src/run/model.js';
import { DEFAULT_PAGE, MAX_PAGE } from '../run-table.js';
import type { ApiServices } from '../runs-source.js';
import { RUN_ID_PATTERN, errorResponses, runIdParams } from '../schemas.js';
import type { Services } from '../services.js';

interface ListQuerystring extends Omit<RunQuery, 'status'> {
  status?: RunStatus[];
}

/**
 * List, show, cancel and rerun runs (from the runs source: the same on
 * qwexcloud and under `qwex ui`); and submit, where `cloud` is given (the
 * team server: uploads and targets are its own).
 */
export const runRoutes: FastifyPluginAsync<{ services: ApiServices; cloud?: Services }> = async (app, { services, cloud }) => {
  const { source } = services;

  app.get<{ Querystring: ListQuerystring }>('/runs', {
    schema: {
      tags: ['runs'],
      summary: 'Runs visible to the token, newest first, a page at a time',
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          user: { type: 'string', maxLength: 63, description: 'admins: one user\'s runs (others only ever see their own)' },
          status: { type: 'array', items: { type: 'string', enum: [...RUN_STATUSES] }, description: 'repeat for several' },
          backend: { type: 'string', maxLength: 32 },
          target: { type: 'string', maxLength: 63 },
          createdAfter: { type: 'string', format: 'date-time' },
          createdBefore: { type: 'string', format: 'date-time' },
          q: { type: 'string', maxLength: 256, description: 'text in the name or command (case-insensitive; % and _ are plain characters)' },
          idPrefix: { type: 'string', pattern: '^[0-9a-f-]{1,36}$' },
          limit: { type: 'integer', minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE },
          cursor: { type: 'string', pattern: RUN_ID_PATTERN },
        },
      },
      response: { 200: { $ref: 'RunPage#' }, ...errorResponses },
    },
  }, async (request) => {
    const q = request.query;
    const query: RunQuery = {
      ...q,
      // Times compare as text in SQL: bring any offset form to the stored UTC form.
      ...(q.createdAfter === undefined ? {} : { createdAfter: new Date(q.createdAfter).toISOString() }),
      ...(q.createdBefore === undefined ? {} : { createdBefore: new Date(q.createdBefore).toISOString() }),
    };
    return source.list(request.principal, query);
  });

  if (cloud) {
    app.post<{ Body: SubmitRequest; Headers: { [IDEMPOTENCY_HEADER]?: string } }>('/runs', {
      bodyLimit: cloud.limits.submitBytes,
      schema: {
        tags: ['runs'],
        summary: 'Submit a run (upload the workspace\'s missing blobs first). With an Idempotency-Key, a repeat of the same request answers 200 with the run the first created',
        headers: {
          type: 'object',
          properties: {
            [IDEMPOTENCY_HEADER]: { type: 'string', pattern: IDEMPOTENCY_KEY_PATTERN, description: 'the client\'s key for this submit (per user): the same key never creates a second run' },
          },
        },
        body: { $ref: 'SubmitRequest#' },
        response: { 200: { $ref: 'RunDetail#' }, 201: { $ref: 'RunDetail#' }, ...errorResponses },
      },
    }, async (request, reply) => {
      const key = request.headers[IDEMPOTENCY_HEADER];
      if (key === undefined) return reply.status(201).send(await cloud.runs.submit(request.principal, request.body));
      const { run, replayed } = await cloud.runs.submitOnce(request.principal, request.body, key);
      return reply.status(replayed ? 200 : 201).send(run);
    });
    app.get<{ Params: { key: string } }>('/submissions/:key', {
      schema: {
        tags: ['runs'],
        summary: 'The run a submit with this Idempotency-Key created (404: no submit used the key)',
        params: { type: 'object', required: ['key'], properties: { key: { type: 'string', pattern: IDEMPOTENCY_KEY_PATTERN } } },
        response: { 200: { $ref: 'RunDetail#' }, ...errorResponses },
      },
    }, async (request) => cloud.runs.submission(request.principal, request.params.key));
  }


  app.get<{ Params: { id: string } }>('/runs/:id', {
    schema: { tags: ['runs'], summary: 'One run with its full record', params: runIdParams, response: { 200: { $ref: 'RunDetail#' }, ...errorResponses } },
  }, async (request) => source.detail(request.principal, request.params.id));

  app.post<{ Params: { id: string }; Body: { graceMs?: number } | undefined }>('/runs/:id/cancel', {
    // No body at all means no options (curl -X POST .../cancel).
    preValidation: async (request) => {
      request.body ??= {};
    },
    schema: {
      tags: ['runs'],
      summary: 'Cancel a run: SIGTERM, then SIGKILL after the grace period (the run\'s own unless given)',
      params: runIdParams,
      body: { type: 'object', additionalProperties: false, properties: { graceMs: { type: 'integer', minimum: 0, maximum: 3_600_000 } } },
      response: { 202: { $ref: 'RunDetail#' }, ...errorResponses },
    },
  }, async (request, reply) => reply.status(202).send(await source.cancel(request.principal, request.params.id, request.body?.graceMs)));

  app.post<{ Params: { id: string } }>('/runs/:id/rerun', {
    schema: {
      tags: ['runs'],
      summary: 'Run the same job (same code, same settings, same target) again, as a new run',
      params: runIdParams,
      response: { 201: { $ref: 'RunDetail#' }, ...errorResponses },
    },
  }, async (request, reply) => reply.status(201).send(await source.rerun(request.principal, request.params.id)));
};
