import type { FastifyPluginAsync } from 'fastify';
import type { ApiServices } from '../runs-source.js';
import type { Services } from '../services.js';
import { artifactRoutes } from './artifacts.js';
import { eventRoutes } from './events.js';
import { logRoutes } from './logs.js';
import { runRoutes } from './runs.js';
import { usageRoutes } from './usage.js';
import { workflowRoutes } from './workflows.js';

/**
 * The run API that qwexcloud and `qwex ui` both serve, from their own runs
 * source: runs, logs, artifacts, usage, workflows and the change feed.
 * `cloud` adds what only the team server has (submitting with uploads).
 */
export const runApiRoutes: FastifyPluginAsync<{ services: ApiServices; cloud?: Services }> = async (app, { services, cloud }) => {
  await app.register(runRoutes, { services, ...(cloud ? { cloud } : {}) });
  await app.register(logRoutes, { services });
  await app.register(artifactRoutes, { services });
  await app.register(usageRoutes, { services });
  await app.register(workflowRoutes, { services });
  await app.register(eventRoutes, { services });
};
