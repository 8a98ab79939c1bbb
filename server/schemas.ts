import { TARGET_BACKENDS } from './config.js';
import { LOG_STREAMS } from '../src/cloud/api.js';
import { RUN_STATUSES } from '../src/run/model.js';

/**
 * JSON schemas of the API, registered once (app.addSchema) and referred to
 * by $ref: Fastify validates requests and serialises responses with them,
 * and @fastify/swagger turns them into the OpenAPI document. They describe
 * the types of src/cloud/api.ts.
 */
const nullable = (type: string): { type: string[] } => ({ type: [type, 'null'] });

export const RUN_ID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
export const SHA256_PATTERN = '^[0-9a-f]{64}$';
const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';

const envMap = {
  type: 'object',
  propertyNames: { pattern: ENV_NAME_PATTERN, maxLength: 256 },
  additionalProperties: { type: 'string', maxLength: 65536 },
  maxProperties: 1000,
};

export const SHARED_SCHEMAS = [
  {
    $id: 'Error',
    type: 'object',
    description: 'Every error: a stable code (the same as the qwex CLI\'s), a message for people, and sometimes a hint.',
    required: ['error'],
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        properties: {
          code: { type: 'string', examples: ['QWEX_RUN_NOT_FOUND'] },
          message: { type: 'string' },
          hint: { type: 'string' },
          details: { type: 'object', additionalProperties: true },
        },
      },
    },
  },
  {
    $id: 'Run',
    type: 'object',
    description: 'A run as listed.',
    required: ['id', 'user', 'target', 'backend', 'cluster', 'queue', 'name', 'command', 'status', 'exitCode', 'signal', 'endReason', 'createdAt', 'startedAt', 'finishedAt', 'updatedAt'],
    properties: runProperties(),
  },
  {
    $id: 'RunDetail',
    type: 'object',
    description: 'A run with its full record (run.json; secret-looking variables redacted).',
    required: ['id', 'user', 'target', 'backend', 'status', 'createdAt', 'updatedAt', 'record'],
    properties: {
      ...runProperties(),
      record: { type: 'object', additionalProperties: true, description: 'run.json as qwex writes it' },
      waitReason: { type: 'string', description: 'why a pending run has not started (its cluster is unhealthy...)' },
    },
  },
  {
    $id: 'RunPage',
    type: 'object',
    required: ['runs', 'nextCursor'],
    properties: {
      runs: { type: 'array', items: { $ref: 'Run#' } },
      nextCursor: { ...nullable('string'), description: 'pass as cursor for the next, older page; null on the last' },
    },
  },
  {
    $id: 'SubmitRequest',
    type: 'object',
    additionalProperties: false,
    required: ['job'],
    properties: {
      target: { type: 'string', maxLength: 63, description: 'a target by name; else the best that fits backend, cluster, queue and labels' },
      backend: { type: 'string', enum: [...TARGET_BACKENDS] },
      queue: { type: 'string', minLength: 1, maxLength: 253, description: 'kueue: one of the target\'s LocalQueues' },
      cluster: { type: 'string', minLength: 1, maxLength: 253, description: 'a cluster: a cluster target\'s name, or the Kubernetes context of one or more targets' },
      labels: { type: 'object', maxProperties: 64, additionalProperties: { type: 'string', maxLength: 256 }, description: 'labels the run needs (e.g. {"gpu": "a100"}): only targets that have them all' },
      notify: { type: 'array', maxItems: 16, items: { type: 'string', minLength: 1, maxLength: 128 }, description: 'notification targets of the server\'s configuration to tell when the run ends, by name' },
      job: {
        type: 'object',
        additionalProperties: false,
        required: ['command'],
        properties: {
          command: {
            // The array first: a string is then taken as the one-element argv it means (qwex treats both alike).
            anyOf: [
              { type: 'array', minItems: 1, maxItems: 4096, items: { type: 'string', maxLength: 131072 } },
              { type: 'string', minLength: 1, maxLength: 131072 },
            ],
            description: 'argv; or one command line, run by /bin/sh -c when it has shell syntax (or shell is true)',
          },
          shell: { type: 'boolean' },
          env: envMap,
          name: { type: 'string', maxLength: 256 },
          cwd: { type: 'string', maxLength: 4096, description: 'relative to the workspace root' },
          watch: { type: 'array', maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 4096 } },
          timeoutMs: { type: 'integer', minimum: 0 },
          killGraceMs: { type: 'integer', minimum: 0, maximum: 3_600_000 },
          container: {
            type: 'object',
            additionalProperties: false,
            description: 'container targets only; mounts, networks and users are the server\'s to set',
            properties: {
              image: { type: 'string', minLength: 1, maxLength: 1024 },
              cpus: { type: ['number', 'string'] },
              memory: { type: ['number', 'string'] },
              gpus: { type: ['number', 'string'] },
              env: envMap,
            },
          },
        },
      },
      workspace: { $ref: 'Workspace#' },
    },
  },
  {
    $id: 'Workspace',
    type: 'object',
    description: 'A workspace snapshot\'s manifest: every file by content hash (uploaded first: POST /v1/blobs/missing, PUT /v1/blobs/{sha256}), and the symlinks.',
    additionalProperties: false,
    required: ['files', 'symlinks'],
    properties: {
      files: {
        type: 'array',
        maxItems: 200_000,
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['path', 'size', 'mode', 'sha256'],
          properties: {
            path: { type: 'string', minLength: 1, maxLength: 4096 },
            size: { type: 'integer', minimum: 0 },
            mode: { type: 'integer', minimum: 0, maximum: 0o7777 },
            sha256: { type: 'string', pattern: SHA256_PATTERN },
          },
        },
      },
      symlinks: {
        type: 'array',
        maxItems: 100_000,
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['path', 'target'],
          properties: { path: { type: 'string', minLength: 1, maxLength: 4096 }, target: { type: 'string', minLength: 1, maxLength: 4096 } },
        },
      },
    },
  },
  {
    $id: 'ArtifactList',
    type: 'object',
    required: ['artifacts', 'skipped', 'error'],
    properties: {
      artifacts: {
        type: 'array',
        items: { type: 'object', required: ['path', 'size', 'sha256'], properties: { path: { type: 'string' }, size: { type: 'integer' }, sha256: { type: 'string' } } },
      },
      skipped: { type: 'array', items: { type: 'object', required: ['path', 'reason'], properties: { path: { type: 'string' }, reason: { type: 'string' } } } },
      error: nullable('string'),
    },
  },
];

function runProperties(): Record<string, unknown> {
  return {
    id: { type: 'string', format: 'uuid' },
    user: { type: 'string' },
    target: { type: 'string' },
    backend: { type: 'string' },
    cluster: nullable('string'),
    queue: nullable('string'),
    name: nullable('string'),
    command: { type: 'string' },
    status: { type: 'string', enum: [...RUN_STATUSES] },
    exitCode: nullable('integer'),
    signal: nullable('string'),
    endReason: nullable('string'),
    createdAt: { type: 'string', format: 'date-time' },
    startedAt: nullable('string'),
    finishedAt: nullable('string'),
    updatedAt: { type: 'string', format: 'date-time' },
    waiting: {
      type: 'object',
      description: 'what the run waits for before its command executes, as its backend says (absent otherwise): a place in qwexd\'s queue, a Kueue workload not admitted yet (the run is `running` then), a pod not scheduled',
      required: ['phase'],
      properties: {
        phase: { type: 'string', enum: ['queued', 'pending'], description: 'queued: not admitted yet; pending: admitted, not running yet' },
        reason: { type: 'string' },
        message: { type: 'string' },
        position: { type: 'integer', description: '1-based place in the queue, where the backend says' },
        where: { type: 'string', description: 'the queue, as a person would name it' },
      },
    },
    job: { type: 'string', description: 'the named job (recipe) this is a run of, if any' },
    workflow: { type: 'object', required: ['id', 'stage'], properties: { id: { type: 'string' }, stage: { type: 'string' } }, description: 'the workflow this run is a stage of, if any' },
  };
}

export const runIdParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: RUN_ID_PATTERN, description: 'a full run id' } },
};

export const errorResponses = {
  '4xx': { $ref: 'Error#' },
  '5xx': { $ref: 'Error#' },
};

export const logStreamSchema = { type: 'string', enum: [...LOG_STREAMS], default: 'stdout' };

/** A response that is an event stream (documented; Fastify does not serialise it). */
export function eventStream(description: string): Record<string, unknown> {
  return { description, content: { 'text/event-stream': { schema: { type: 'string' } } } };
}

export function binary(description: string): Record<string, unknown> {
  return { description, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } };
}
