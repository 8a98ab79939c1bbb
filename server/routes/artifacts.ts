import type { FastifyPluginAsync } from 'fastify';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { binary, errorResponses, runIdParams } from '../schemas.js';
import type { Services } from '../services.js';
import { isInsidePath } from '../workspace-upload.js';

/** What a run left in its watched directories, collected into the server's content store when it ended. */
export const artifactRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { runs, blobs } = services;

  app.get<{ Params: { id: string } }>('/runs/:id/artifacts', {
    schema: { tags: ['artifacts'], summary: 'A run\'s artifacts: path, size, sha256 (empty until the run ended)', params: runIdParams, response: { 200: { $ref: 'ArtifactList#' }, ...errorResponses } },
  }, async (request) => runs.artifacts(request.principal, request.params.id));

  app.get<{ Params: { id: string; '*': string } }>('/runs/:id/artifacts/*', {
    schema: {
      tags: ['artifacts'],
      summary: 'One artifact\'s content, by its path (as listed)',
      params: { type: 'object', required: ['id', '*'], properties: { ...runIdParams.properties, '*': { type: 'string', minLength: 1, maxLength: 4096 } } },
      response: { 200: binary('the file'), ...errorResponses },
    },
  }, async (request, reply) => {
    const path = request.params['*'];
    if (!isInsidePath(path)) {
      throw new QwexError(ErrorCode.Usage, 'an artifact path is relative, with no "", "." or ".." parts', { hint: `GET /v1/runs/${request.params.id}/artifacts lists them` });
    }
    const entry = await runs.artifact(request.principal, request.params.id, path);
    const blob = blobs.open(entry.sha256);
    if (!blob) throw new QwexError(ErrorCode.NotFound, `the content of artifact "${path}" is missing from the server's store`, { hint: 'the data directory was damaged or restored partly; see the server\'s log' });
    const name = path.split('/').pop()!.replace(/["\\\r\n]/g, '_');
    void reply
      .type('application/octet-stream')
      .header('content-length', blob.size)
      .header('content-disposition', `attachment; filename="${name}"`)
      .header('x-qwex-sha256', entry.sha256);
    return reply.send(blob.stream);
  });
};
