import type { FastifyPluginAsync } from 'fastify';
import type { TargetInfo } from '../../src/cloud/api.js';
import { errorResponses } from '../schemas.js';

/** Who the token is, and (on qwexcloud) where runs can go. */
export const meRoutes: FastifyPluginAsync<{ targets?: () => TargetInfo[] }> = async (app, { targets }) => {
  app.get('/me', {
    schema: {
      tags: ['server'],
      summary: 'The user the token stands for',
      response: {
        200: { type: 'object', required: ['user', 'admin', 'tokenId'], properties: { user: { type: 'string' }, admin: { type: 'boolean' }, tokenId: { type: 'string' } } },
        ...errorResponses,
      },
    },
  }, async (request) => request.principal);

  if (!targets) return;
  app.get('/targets', {
    schema: {
      tags: ['server'],
      summary: 'The targets runs can be sent to',
      response: {
        200: {
          type: 'object',
          required: ['targets'],
          properties: {
            targets: {
              type: 'array',
              items: {
                type: 'object',
                required: ['name', 'backend', 'queues', 'labels'],
                properties: { name: { type: 'string' }, backend: { type: 'string' }, queues: { type: 'array', items: { type: 'string' } }, labels: { type: 'object', additionalProperties: { type: 'string' } } },
              },
            },
          },
        },
        ...errorResponses,
      },
    },
  }, async () => ({ targets: targets() }));
};
