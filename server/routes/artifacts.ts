import type { FastifyPluginAsync } from 'fastify';
import { ErrorCode, QwexError } from '../../src/errors.js';
import type { ApiServices } from '../runs-source.js';
import { binary, errorResponses, runIdParams } from '../schemas.js';
import { isInsidePath } from '../workspace-upload.js';

/** What a run left in its watched directories (on qwexcloud: collected into its content store when the run ended). */
export const artifactRoutes: FastifyPluginAsync<{ services: ApiServices }> = async (app, { services }) => {
  const { source } = services;

  app.get<{ Params: { id: string } }>('/runs/:id/artifacts', {
    schema: { tags: ['artifacts'], summary: 'A run\'s artifacts: path, size, sha256 (empty until the run ended)', params: runIdParams, response: { 200: { $ref: 'ArtifactList#' }, ...errorResponses } },
  }, async (request) => source.artifacts(request.principal, request.params.id));

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
    const { entry, content } = await source.openArtifact(request.principal, request.params.id, path);
    const name = path.split('/').pop()!;
    // An ASCII fallback and the exact name (RFC 6266): a header cannot carry other characters as they are.
    const fallback = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
    void reply
      .type('application/octet-stream')
      .header('content-length', entry.size)
      .header('content-disposition', `attachment; filename="${fallback}"; filename*=UTF-8''${encodeRfc5987(name)}`)
      .header('x-qwex-sha256', entry.sha256);
    return reply.send(content);
  });
};

/** RFC 5987's value encoding: percent-encoded UTF-8, with the characters encodeURIComponent leaves that it does not allow. */
function encodeRfc5987(text: string): string {
  return encodeURIComponent(text).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}
