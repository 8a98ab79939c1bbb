import type { FastifyPluginAsync } from 'fastify';
import { VERSION } from '../../src/version.js';

/** The one route that needs no token: for load balancers, Kubernetes probes and `qwex login` checking an address. */
export const healthRoutes: FastifyPluginAsync = async (app) => {
  app.get('/health', {
    schema: {
      tags: ['server'],
      summary: 'Whether the server is up (no token needed)',
      security: [],
      response: {
        200: { type: 'object', required: ['status', 'version'], properties: { status: { type: 'string', enum: ['ok'] }, version: { type: 'string' } } },
      },
    },
  }, async () => ({ status: 'ok' as const, version: VERSION }));
};
