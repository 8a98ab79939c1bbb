import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance } from 'fastify';
import cookie from '@fastify/cookie';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import { API_PREFIX } from '../src/cloud/api.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import { VERSION } from '../src/version.js';
import { requireToken, tokenCredentials } from './auth.js';
import type { ServerConfig } from './config.js';
import { installErrorHandling } from './http-errors.js';
import { blobRoutes } from './routes/blobs.js';
import { healthRoutes } from './routes/health.js';
import { meRoutes } from './routes/me.js';
import { runApiRoutes } from './routes/run-api.js';
import { sessionRoutes } from './routes/session.js';
import { SHARED_SCHEMAS } from './schemas.js';
import { clusterRoutes } from './clusters-routes.js';
import { notifyRoutes } from './notify-routes.js';
import type { Services } from './services.js';
import { targetInfo } from './targets.js';
import { pageRoutes } from './ui-pages.js';

/**
 * The HTTP application: one encapsulated plugin per route group under
 * /v1, all but the health check and the dashboard's login behind the token
 * hook and the per-token rate limit; the dashboard's pages at `/`. It opens
 * nothing itself: the services are given, and whoever gave them closes
 * them (server/main.ts).
 */
export async function buildApp(config: Pick<ServerConfig, 'limits' | 'tls' | 'trustProxy' | 'logLevel'>, services: Services, logStream?: NodeJS.WritableStream): Promise<FastifyInstance> {
  const app = Fastify({
    logger: {
      level: config.logLevel,
      // Tokens never reach the log, whatever a serializer or a debug line would otherwise print.
      redact: {
        paths: ['req.headers.authorization', 'headers.authorization', 'request.headers.authorization', 'req.headers.cookie', 'headers.cookie', 'request.headers.cookie'],
        censor: '[redacted]',
      },
      ...(logStream ? { stream: logStream } : {}),
    },
    bodyLimit: config.limits.bodyBytes,
    trustProxy: config.trustProxy,
    // Unknown keys are refused with a message naming them, never silently dropped.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false, allowUnionTypes: true } },
    ...(config.tls ? { https: { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } } : {}),
  });
  installErrorHandling(app);
  for (const schema of SHARED_SCHEMAS) app.addSchema(schema);
  await app.register(cookie);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'qwexcloud',
        version: VERSION,
        description: 'The qwex team server: submit runs to its targets, follow their logs, fetch their artifacts, and keep their history. Every route but /v1/health and /v1/session needs `Authorization: Bearer TOKEN` (or the dashboard\'s login cookie, with `X-Qwex-CSRF: 1` on requests that change something). Errors are `{ error: { code, message, hint? } }` with qwex\'s stable codes.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'a qwexcloud token (qwx_...)' } } },
      security: [{ bearerAuth: [] }],
      tags: [
        { name: 'server', description: 'health, identity, targets' },
        { name: 'runs', description: 'submit, list, show, cancel, rerun; the change feed' },
        { name: 'logs', description: 'follow (Server-Sent Events) and download' },
        { name: 'artifacts', description: 'what runs left behind' },
        { name: 'workspaces', description: 'content uploads, each file once' },
      ],
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });

  await app.register(pageRoutes, { mode: 'team', rootJson: () => ({ name: 'qwexcloud', version: VERSION, api: API_PREFIX, openapi: `${API_PREFIX}/openapi.json` }) });

  await app.register(async (v1) => {
    await v1.register(healthRoutes);
    await v1.register(sessionRoutes, { tokens: services.tokens });
    await v1.register(async (secured) => {
      requireToken(secured, tokenCredentials(services.tokens));
      await secured.register(rateLimit, {
        global: true,
        hook: 'preHandler',
        max: config.limits.rateMax,
        timeWindow: config.limits.rateWindowMs,
        keyGenerator: (request) => request.principal?.tokenId ?? request.ip,
        errorResponseBuilder: (_request, context) =>
          new QwexError(ErrorCode.RateLimited, `too many requests with this token: at most ${context.max} per ${Math.round(config.limits.rateWindowMs / 1000)} s`, {
            hint: `retry in ${context.after}`,
          }),
      });
      secured.get('/openapi.json', { schema: { tags: ['server'], summary: 'This document' } }, async () => app.swagger());
      await secured.register(meRoutes, { targets: () => services.runs.targets.map(targetInfo) });
      await secured.register(runApiRoutes, { services, cloud: services });
      await secured.register(blobRoutes, { services });
      if (services.clusters) await secured.register(clusterRoutes, { database: services.clusters.database, targets: services.runs.targets, monitor: services.clusters.monitor });
      if (services.notifications) await secured.register(notifyRoutes, { services, notifications: services.notifications });
    });
  }, { prefix: API_PREFIX });

  // Open event streams end before the server waits for its connections to close.
  app.addHook('preClose', async () => services.streams.closeAll());
  return app;
}
