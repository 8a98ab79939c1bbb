import type { FastifyPluginAsync } from 'fastify';
import type { Readable } from 'node:stream';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { SHA256_PATTERN, errorResponses } from '../schemas.js';
import type { Services } from '../services.js';

/** How many hashes one POST /v1/blobs/missing may ask about. */
const MAX_ASKED = 200_000;

/**
 * Content uploads for workspaces: ask which hashes the server lacks, then
 * upload those alone, each verified on arrival. A project uploaded before
 * costs one question and no upload.
 */
export const blobRoutes: FastifyPluginAsync<{ services: Services }> = async (app, { services }) => {
  const { blobs, limits } = services;
  // Uploads are streamed to disk while hashed, never held in memory (this parser is only for this plugin's routes).
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));

  app.post<{ Body: { sha256: string[] } }>('/blobs/missing', {
    bodyLimit: 16 * 1024 * 1024,
    schema: {
      tags: ['workspaces'],
      summary: 'Which of these content hashes the server lacks',
      body: { type: 'object', additionalProperties: false, required: ['sha256'], properties: { sha256: { type: 'array', maxItems: MAX_ASKED, items: { type: 'string', pattern: SHA256_PATTERN } } } },
      response: { 200: { type: 'object', required: ['missing'], properties: { missing: { type: 'array', items: { type: 'string' } } } }, ...errorResponses },
    },
  }, async (request) => ({ missing: await blobs.missing(request.body.sha256) }));

  app.put<{ Params: { sha256: string }; Body: Readable }>('/blobs/:sha256', {
    schema: {
      tags: ['workspaces'],
      summary: 'Upload one file\'s content (application/octet-stream) under its sha256; a mismatch is refused and nothing is kept',
      params: { type: 'object', required: ['sha256'], properties: { sha256: { type: 'string', pattern: SHA256_PATTERN } } },
      response: {
        200: { type: 'object', required: ['sha256', 'size', 'created'], properties: { sha256: { type: 'string' }, size: { type: 'integer' }, created: { type: 'boolean' } } },
        201: { type: 'object', required: ['sha256', 'size', 'created'], properties: { sha256: { type: 'string' }, size: { type: 'integer' }, created: { type: 'boolean' } } },
        ...errorResponses,
      },
    },
  }, async (request, reply) => {
    const declared = Number(request.headers['content-length']);
    if (Number.isFinite(declared) && declared > limits.uploadBytes) {
      // Refused before reading: the connection is closed after the answer, so the rest is never read.
      void reply.header('connection', 'close');
      throw new QwexError(ErrorCode.TooLarge, `the upload (${declared} bytes) is larger than the server's limit of ${limits.uploadBytes} bytes`, {
        hint: 'leave large data out of the workspace (.qwexignore), or ask the admin to raise limits.upload_bytes',
      });
    }
    if (request.body === undefined) throw new QwexError(ErrorCode.Usage, 'upload the content as application/octet-stream');
    const { created, size } = await blobs.receive(request.params.sha256, request.body, limits.uploadBytes);
    return reply.status(created ? 201 : 200).send({ sha256: request.params.sha256, size, created });
  });
};
