import { createReadStream, statSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyPluginAsync } from 'fastify';
import { LogEvent, type CloudRun, type LogStream } from '../../src/cloud/api.js';
import { ErrorCode, QwexError, errnoCode } from '../../src/errors.js';
import { RunFiles } from '../../src/paths.js';
import { isTerminal } from '../../src/run/model.js';
import { tailFile } from '../log-tail.js';
import type { ApiServices } from '../runs-source.js';
import { binary, errorResponses, eventStream, logStreamSchema, runIdParams } from '../schemas.js';

/**
 * A run's logs: followed as Server-Sent Events (each chunk base64, its id
 * the byte offset after it, so that Last-Event-ID resumes exactly), or
 * downloaded as they are. Followers read the log files; they never query
 * the database while they wait.
 */
export const logRoutes: FastifyPluginAsync<{ services: ApiServices }> = async (app, { services }) => {
  const { source, streams, watchers } = services;

  app.get<{ Params: { id: string }; Querystring: { stream: LogStream; follow?: string; offset?: number } }>('/runs/:id/logs', {
    schema: {
      tags: ['logs'],
      summary: 'A run\'s log as Server-Sent Events: `chunk` (base64; id = byte offset after it), then `eof` (not following) or `end` (the run ended; data: the run)',
      params: runIdParams,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          stream: logStreamSchema,
          follow: { type: 'string', enum: ['0', '1', 'true', 'false'], default: '0', description: '1: keep the stream open until the run ends' },
          offset: { type: 'integer', minimum: 0, description: 'start at this byte (Last-Event-ID wins)' },
        },
      },
      headers: { type: 'object', properties: { 'last-event-id': { type: 'string', pattern: '^[0-9]{1,15}$' } } },
      response: { 200: eventStream('the log, as events'), ...errorResponses },
    },
  }, async (request, reply) => {
    const { id } = request.params;
    const follow = request.query.follow === '1' || request.query.follow === 'true';
    const header = request.headers['last-event-id'];
    const offset = typeof header === 'string' ? Number(header) : (request.query.offset ?? 0);
    let final: CloudRun | undefined;
    let path = '';
    // Subscribed before the run is looked up: an end between the two is not missed.
    const unsubscribe = source.onRunChange(id, (changed) => {
      if (!isTerminal(changed.status)) return;
      final = changed;
      if (path) watchers.wakeAll(path);
    });
    try {
      const { dir, run } = await source.locate(request.principal, id);
      if (isTerminal(run.status)) final ??= run;
      path = logPath(dir, request.query.stream);
      const size = sizeOf(path);
      if (offset > size) {
        throw new QwexError(ErrorCode.Usage, `offset ${offset} is past the end of the ${request.query.stream} log (${size} bytes)`, { hint: 'resume with the id of the last event received' });
      }
      const sse = streams.start(reply);
      try {
        const gone = new Promise<void>((resolve) => sse.onClose(resolve));
        const reached = await tailFile({
          path,
          offset,
          follow,
          watchers,
          ended: () => final !== undefined,
          gone,
          onChunk: (chunk, next) => sse.send(LogEvent.Chunk, chunk.toString('base64'), next),
        });
        if (sse.closed) return;
        if (follow && final) await sse.send(LogEvent.End, JSON.stringify(await source.detail(request.principal, id)), reached);
        else await sse.send(LogEvent.Eof, JSON.stringify({ offset: reached, status: final?.status ?? run.status }), reached);
      } catch (error) {
        // The answer has started: all that is left to do is to log it and end the stream (the client resumes).
        request.log.error({ err: error }, 'log stream failed');
      } finally {
        sse.close();
      }
    } finally {
      unsubscribe();
    }
  });

  app.get<{ Params: { id: string; stream: LogStream }; Querystring: { offset?: number } }>('/runs/:id/logs/:stream', {
    schema: {
      tags: ['logs'],
      summary: 'A run\'s log as it is now, as bytes',
      params: { ...runIdParams, required: ['id', 'stream'], properties: { ...runIdParams.properties, stream: { type: 'string', enum: ['stdout', 'stderr'] } } },
      querystring: { type: 'object', additionalProperties: false, properties: { offset: { type: 'integer', minimum: 0 } } },
      response: { 200: binary('the log\'s bytes from offset'), ...errorResponses },
    },
  }, async (request, reply) => {
    const { dir } = await source.locate(request.principal, request.params.id);
    const path = logPath(dir, request.params.stream);
    const size = sizeOf(path);
    const offset = request.query.offset ?? 0;
    if (offset > size) throw new QwexError(ErrorCode.Usage, `offset ${offset} is past the end of the log (${size} bytes)`);
    void reply.type('application/octet-stream').header('content-length', size - offset).header('x-qwex-log-size', size);
    if (size === offset) return reply.send(Buffer.alloc(0));
    return reply.send(createReadStream(path, { start: offset, end: size - 1 }));
  });
};

function logPath(dir: string, stream: LogStream): string {
  return join(dir, stream === 'stdout' ? RunFiles.stdout : RunFiles.stderr);
}

/** The log's size; 0 while it does not exist yet. Any other failure is the request's (not an empty log). */
function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return 0;
    throw error;
  }
}
