import type { FastifyPluginAsync } from 'fastify';
import { errorResponses, eventStream } from '../schemas.js';
import type { ApiServices } from '../runs-source.js';

/** The change feed: what a dashboard listens to instead of polling the list. */
export const eventRoutes: FastifyPluginAsync<{ services: ApiServices }> = async (app, { services }) => {
  app.get('/events', {
    schema: {
      tags: ['runs'],
      summary: 'Server-Sent Events: `run` (data: the run as listed) whenever a run the token may see changes; `reset` when a resume (Last-Event-ID) asks for more than the server kept',
      headers: { type: 'object', properties: { 'last-event-id': { type: 'string', maxLength: 64 } } },
      response: { 200: eventStream('run changes, as events'), ...errorResponses },
    },
  }, async (request, reply) => {
    const header = request.headers['last-event-id'];
    const stream = services.streams.start(reply);
    services.feed.subscribe(request.principal, stream, typeof header === 'string' ? header : undefined);
    // Something for the client to see at once: the stream is open and authorised.
    stream.comment('connected');
  });
};
