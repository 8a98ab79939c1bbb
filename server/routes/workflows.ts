import type { FastifyPluginAsync } from 'fastify';
import type { ApiServices } from '../runs-source.js';
import { errorResponses } from '../schemas.js';

/** A workflow and its stages, for the dashboard's graph (QWEX_NOT_FOUND, 404, where there are no workflows yet). */
export const workflowRoutes: FastifyPluginAsync<{ services: ApiServices }> = async (app, { services }) => {
  app.get<{ Params: { id: string } }>('/workflows/:id', {
    schema: {
      tags: ['runs'],
      summary: 'A workflow: its status and its stages, each with its run, status, exit code and the stages it needs',
      params: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^[0-9a-zA-Z][0-9a-zA-Z._-]{0,63}$' } } },
      response: {
        200: {
          type: 'object',
          required: ['id', 'status', 'stages'],
          properties: {
            id: { type: 'string' },
            status: { type: 'string' },
            stages: {
              type: 'array',
              items: {
                type: 'object',
                required: ['name', 'runId', 'status', 'exitCode', 'needs'],
                properties: {
                  name: { type: 'string' },
                  runId: { type: ['string', 'null'] },
                  status: { type: 'string' },
                  exitCode: { type: ['integer', 'null'] },
                  needs: { type: 'array', items: { type: 'string' } },
                },
              },
            },
          },
        },
        ...errorResponses,
      },
    },
  }, async (request) => services.source.workflow(request.principal, request.params.id));
};
