import type { FastifyPluginAsync } from 'fastify';
import type { Target } from './config.js';
import { listClusters, type ClusterMonitor } from './clusters.js';
import type { Db } from './db/connect.js';
import { errorResponses } from './schemas.js';

const clusterSchema = {
  type: 'object',
  required: ['name', 'backend', 'configured', 'health', 'reason', 'since', 'checkedAt', 'labels', 'weight', 'queues', 'runs'],
  properties: {
    name: { type: 'string' },
    backend: { type: ['string', 'null'], description: 'null for a cluster only the history knows' },
    configured: { type: 'boolean', description: 'false once removed from the configuration (its runs stay in the history)' },
    health: { type: 'string', enum: ['healthy', 'unhealthy', 'unknown'] },
    reason: { type: ['string', 'null'], description: 'why it is unhealthy' },
    since: { type: ['string', 'null'], description: 'since when it is what health says' },
    checkedAt: { type: ['string', 'null'] },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
    weight: { type: ['number', 'null'] },
    queues: {
      type: 'array',
      items: { type: 'object', required: ['name', 'pending'], properties: { name: { type: 'string' }, pending: { type: ['integer', 'null'], description: 'Kueue\'s pending workloads (null where Kueue does not say)' } } },
    },
    runs: { type: 'object', required: ['pending', 'running', 'total'], properties: { pending: { type: 'integer' }, running: { type: 'integer' }, total: { type: 'integer' } } },
  },
};

/** The clusters behind this server: health, queues, and its runs there. */
export const clusterRoutes: FastifyPluginAsync<{ database: Db; targets: readonly Target[]; monitor: ClusterMonitor }> = async (app, { database, targets, monitor }) => {
  app.get('/clusters', {
    schema: {
      tags: ['server'],
      summary: 'Each cluster: its health (with the reason and since when), Kueue\'s queue lengths, and the pending and running runs there',
      response: { 200: { type: 'object', required: ['clusters'], properties: { clusters: { type: 'array', items: clusterSchema } } }, ...errorResponses },
    },
  }, async () => ({ clusters: await listClusters(database, targets, (name) => monitor.state(name)) }));
};
