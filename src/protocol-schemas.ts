import { z } from 'zod';
import { RUN_STATUSES, type Job } from './run/model.js';
import type { MethodName, Params } from './protocol.js';

/**
 * Parameter schemas for every method of the protocol table, used by the
 * server to answer -32602 with the offending key. Kept apart from
 * protocol.ts so that clients do not load zod.
 */
const jobSchema: z.ZodType<Job> = z.strictObject({
  command: z.array(z.string()).min(1),
  shell: z.boolean(),
  cwd: z.string().startsWith('/'),
  env: z.record(z.string(), z.string()),
  backend: z.string().min(1),
  backendOptions: z.record(z.string(), z.unknown()),
  artifacts: z.strictObject({
    watch: z.array(z.string()),
    ignore: z.array(z.string()),
    maxFileSizeMb: z.number().positive(),
  }),
  killGraceMs: z.number().int().nonnegative(),
  timeoutMs: z.number().int().positive().optional(),
  name: z.string().optional(),
  workspace: z.strictObject({ mode: z.literal('snapshot'), manifest: z.string().regex(/^[0-9a-f]{64}$/), cwd: z.string() }).optional(),
  container: z
    .strictObject({
      image: z.string().min(1),
      pull: z.enum(['never', 'missing', 'always']),
      user: z.string().min(1).optional(),
      network: z.string().min(1).optional(),
      mounts: z.array(z.strictObject({ source: z.string().startsWith('/'), target: z.string().startsWith('/'), readonly: z.boolean() })),
      env: z.record(z.string(), z.string()),
      resources: z.strictObject({
        cpus: z.number().positive().optional(),
        memoryBytes: z.number().int().positive().optional(),
        gpus: z.union([z.number().int().positive(), z.literal('all'), z.array(z.string().min(1))]).optional(),
      }),
    })
    .optional(),
}) as z.ZodType<Job>;

const provenanceSchema = z.strictObject({
  manifest: z.string().optional(),
  git: z.strictObject({ commit: z.string(), branch: z.string().nullable(), dirty: z.boolean() }).optional(),
});

const runRef = z.strictObject({ id: z.string().min(1).max(36) });
const empty = z.union([z.strictObject({}), z.undefined(), z.array(z.never()).length(0)]).transform(() => ({}));
const offset = z.number().int().nonnegative().optional();

export const ParamSchemas: { [M in MethodName]: z.ZodType<Params[M]> } = {
  'qwex.hello': z.strictObject({ protocolVersion: z.number().int(), client: z.string().optional() }),
  'run.submit': z.strictObject({
    project: z.string().startsWith('/'),
    jobs: z.array(jobSchema).min(1).max(10_000),
    env: z.record(z.string(), z.string()),
    provenance: z.array(provenanceSchema.nullable()).optional(),
  }) as z.ZodType<Params['run.submit']>,
  'run.cancel': z.strictObject({ id: z.string().min(1).max(36), graceMs: z.number().int().nonnegative().optional() }),
  'run.get': runRef,
  'run.list': z.strictObject({
    project: z.string().optional(),
    statuses: z.array(z.enum(RUN_STATUSES as [string, ...string[]])).optional(),
    limit: z.number().int().nonnegative().optional(),
  }) as z.ZodType<Params['run.list']>,
  'logs.subscribe': z.strictObject({
    id: z.string().min(1).max(36),
    stdoutOffset: offset,
    stderrOffset: offset,
    streams: z.array(z.enum(['stdout', 'stderr'])).optional(),
  }),
  'logs.unsubscribe': z.strictObject({ subscription: z.string().min(1) }),
  'daemon.status': empty as unknown as z.ZodType<Params['daemon.status']>,
  'daemon.shutdown': empty as unknown as z.ZodType<Params['daemon.shutdown']>,
};

/** "jobs.0.cwd: Invalid input: expected string" */
export function describeParamsError(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid params';
  const path = issue.path.map(String).join('.');
  const key = issue.code === 'unrecognized_keys' ? `${path ? `${path}.` : ''}${issue.keys.join(', ')}` : path;
  return key ? `${key}: ${issue.message}` : issue.message;
}
