import type { FastifyPluginAsync } from 'fastify';
import type { DeliveryStatus } from '../src/notify/journal.js';
import type { ServerNotifications } from './notify.js';
import { errorResponses, runIdParams } from './schemas.js';
import type { Services } from './services.js';

const deliverySchema = {
  type: 'object',
  required: ['id', 'subject', 'event', 'target', 'status', 'attempts', 'nextAttemptAt', 'lastError', 'lastResponse', 'createdAt', 'updatedAt', 'deliveredAt'],
  properties: {
    id: { type: 'string', description: 'the delivery id, sent as X-Qwex-Delivery' },
    subject: { type: 'string', description: 'the run (or workflow) it is about' },
    event: { type: 'string', enum: ['succeeded', 'failed', 'cancelled', 'lost', 'waiting', 'workflow'] },
    target: { type: 'string', description: 'where it goes, with nothing secret' },
    status: { type: 'string', enum: ['pending', 'delivered', 'failed'] },
    attempts: { type: 'integer' },
    nextAttemptAt: { type: ['string', 'null'] },
    lastError: { type: ['string', 'null'] },
    lastResponse: { type: ['string', 'null'] },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    deliveredAt: { type: ['string', 'null'] },
  },
};

const listResponse = { type: 'object', required: ['notifications'], properties: { notifications: { type: 'array', items: deliverySchema } } };

/** The journal of notifications: every delivery and failure, for the runs the token may see. */
export const notifyRoutes: FastifyPluginAsync<{ services: Services; notifications: ServerNotifications }> = async (app, { services, notifications }) => {
  app.get<{ Querystring: { status?: DeliveryStatus[]; limit?: number; before?: string } }>('/notifications', {
    schema: {
      tags: ['runs'],
      summary: 'Notification deliveries, newest first (an admin\'s: everyone\'s; others\': their runs\')',
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          status: { type: 'array', items: { type: 'string', enum: ['pending', 'delivered', 'failed'] }, description: 'repeat for several' },
          limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 },
          before: { type: 'string', format: 'date-time', description: 'only deliveries created before this (the createdAt of the last of a page)' },
        },
      },
      response: { 200: listResponse, ...errorResponses },
    },
  }, async (request) => ({
    notifications: await notifications.list(request.principal, {
      ...(request.query.status ? { statuses: request.query.status } : {}),
      ...(request.query.limit === undefined ? {} : { limit: request.query.limit }),
      ...(request.query.before === undefined ? {} : { before: new Date(request.query.before).toISOString() }),
    }),
  }));

  app.get<{ Params: { id: string } }>('/runs/:id/notifications', {
    schema: { tags: ['runs'], summary: 'The notification deliveries of one run, oldest first', params: runIdParams, response: { 200: listResponse, ...errorResponses } },
  }, async (request) => {
    const row = await services.runs.row(request.principal, request.params.id);
    const list = await notifications.list({ ...request.principal, admin: true }, { subject: row.id, limit: 500 });
    return { notifications: list.reverse() };
  });
};
