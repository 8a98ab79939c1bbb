import { z } from 'zod';
import type { Waiting } from './backends/types.js';
import type { ArtifactSettings, Job, Provenance, Run } from './run/model.js';
import { notifySpecSchema } from './notify/spec-schema.js';
import { RUN_STATUSES } from './run/model.js';
import type { RunSummary } from './store/run-index.js';
import { WORKFLOW_STATUSES, type StagePlan, type WorkflowView } from './workflow/types.js';

/**
 * The qwexd protocol, as data: for every method the schema of its params
 * and of its result, and for every notification the schema of its params.
 * This table is the one source: qwexd registers a handler per entry and
 * checks params against it (-32602 names the offending key); the types
 * clients use (Params<M>, Results<M>, NotificationParams<N> in protocol.ts)
 * are inferred from it. Clients import this module for types only, so they
 * never load zod. Result schemas are not checked at run time (the server
 * builds its results itself); the protocol tests check real answers
 * against them.
 *
 * Every array and string a client sends has a bound, so that no request can
 * make qwexd build something unbounded from it.
 */
export const Bounds = {
  /** A run id (a UUIDv7 is 36 characters) or a unique prefix of one; a subscription id (a UUID). */
  id: 36,
  jobs: 10_000,
  /** argv entries of one command; each at most `arg` characters (Linux's MAX_ARG_STRLEN is 128 KiB). */
  args: 10_000,
  arg: 128 * 1024,
  path: 4096,
  envEntries: 4096,
  envName: 1024,
  envValue: 128 * 1024,
  /** Entries of `artifacts.watch`, `artifacts.ignore`, `container.mounts`, GPU ids. */
  list: 1024,
  label: 1024,
  /** Keys of backendOptions, and how deeply its values may nest. */
  optionKeys: 256,
  optionDepth: 32,
} as const;

const text = (max: number = Bounds.label) => z.string().max(max);
const path = () => z.string().max(Bounds.path);
const absolutePath = () => path().startsWith('/');
const runId = () => z.string().min(1).max(Bounds.id);
const count = () => z.number().int().nonnegative();

function entries<V extends z.ZodType>(value: V, max: number) {
  return z
    .record(z.string().max(Bounds.envName), value)
    .refine((record) => Object.keys(record).length <= max, { message: `at most ${max} entries` });
}
const env = () => entries(z.string().max(Bounds.envValue), Bounds.envEntries);
/** A count, every GPU, or which ones (indexes or UUIDs). */
const gpuRequest = () => z.union([z.number().int().positive(), z.literal('all'), z.array(z.string().min(1).max(Bounds.label)).min(1).max(Bounds.list)]);
/** A GPU qwexd handed to a run. */
const runGpu = z.object({ index: z.number(), uuid: z.string(), name: z.string() });

/** Nesting depth of a JSON value, without recursion (a value parsed from 4 MiB can be 2 million levels deep). */
function depthOf(value: unknown, limit: number): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    deepest = Math.max(deepest, depth);
    if (deepest > limit) return deepest;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return deepest;
}

const artifactSettingsSchema = z.strictObject({
  watch: z.array(path()).max(Bounds.list),
  ignore: z.array(path()).max(Bounds.list),
  maxFileSizeMb: z.number().positive(),
}) satisfies z.ZodType<ArtifactSettings>;

const jobShape = z.strictObject({
  command: z.array(text(Bounds.arg)).min(1).max(Bounds.args),
  shell: z.boolean(),
  cwd: absolutePath(),
  env: env(),
  backend: z.string().min(1).max(64),
  backendOptions: entries(z.unknown(), Bounds.optionKeys).refine((options) => depthOf(options, Bounds.optionDepth) <= Bounds.optionDepth, {
    message: `nested more than ${Bounds.optionDepth} levels deep`,
  }),
  artifacts: artifactSettingsSchema,
  killGraceMs: count(),
  timeoutMs: z.number().int().positive().optional(),
  name: text().optional(),
  workspace: z.strictObject({ mode: z.literal('snapshot'), manifest: z.string().regex(/^[0-9a-f]{64}$/), cwd: path() }).optional(),
  container: z
    .strictObject({
      image: z.string().min(1).max(Bounds.label),
      pull: z.enum(['never', 'missing', 'always']),
      user: z.string().min(1).max(Bounds.label).optional(),
      network: z.string().min(1).max(Bounds.label).optional(),
      mounts: z.array(z.strictObject({ source: absolutePath(), target: absolutePath(), readonly: z.boolean() })).max(Bounds.list),
      env: env(),
      resources: z.strictObject({
        cpus: z.number().positive().optional(),
        memoryBytes: z.number().int().positive().optional(),
        gpus: gpuRequest().optional(),
      }),
    })
    .optional(),
  gpus: gpuRequest().optional(),
  allGpusVisible: z.boolean().optional(),
  recipe: z.strictObject({ name: text(), version: text(), params: entries(text(Bounds.arg), Bounds.envEntries) }).optional(),
  retry: z.strictObject({ limit: count(), on: z.array(z.enum(['failed', 'lost'])).max(2), backoffMs: count() }).optional(),
  attempt: z.strictObject({ of: runId(), number: z.number().int().min(2), notBefore: text().optional() }).optional(),
  after: z.strictObject({ runs: z.array(runId()).min(1).max(Bounds.list), require: z.enum(['success', 'end']) }).optional(),
  workflow: z.strictObject({ id: runId(), stage: text() }).optional(),
  rerunOf: runId().optional(),
  notify: notifySpecSchema().optional(),
});

/** Typed as the interface, so that inferred types say `Job` (jobShape is checked against it below). */
const jobSchema: z.ZodType<Job> = jobShape;

const provenanceSchema = z.strictObject({
  manifest: text().optional(),
  git: z.strictObject({ commit: text(), branch: text().nullable(), dirty: z.boolean() }).optional(),
});

const runStatus = z.enum(RUN_STATUSES as [Run['status'], ...Run['status'][]]);

const runShape = z.object({
  version: z.literal(1),
  id: z.string(),
  project: z.string(),
  job: jobSchema,
  status: runStatus,
  createdAt: z.string(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  exitCode: z.number().nullable(),
  signal: z.string().nullable(),
  endReason: z.enum(['exit', 'signal', 'cancel', 'timeout', 'lost', 'error']).optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  // The backend's name, and its own details (each backend types them in its folder).
  backend: z.looseObject({ name: z.string() }),
  artifacts: z.object({ count: z.number(), bytes: z.number(), skipped: z.number(), error: z.string().optional() }).optional(),
  leftovers: z.number().optional(),
  resources: z.object({ peakRssBytes: z.number(), cpuSeconds: z.number() }).optional(),
  provenance: provenanceSchema.optional(),
  supervisor: z.enum(['direct', 'qwexd']).optional(),
  gpus: z.array(runGpu).optional(),
  metadata: z.object({ host: z.string(), user: z.string(), qwexVersion: z.string() }),
});

const runSchema: z.ZodType<Run> = runShape;

export const resourceUsageSchema = z.object({
  /** Percent of one CPU, summed over the run's process tree. */
  cpuPercent: z.number(),
  rssBytes: z.number(),
  processes: z.number(),
});

const waitingSchema = z.object({
  phase: z.enum(['queued', 'pending']),
  reason: z.string().optional(),
  message: z.string().optional(),
  position: z.number().optional(),
  where: z.string().optional(),
});

const runSummarySchema = z.object({
  id: z.string(),
  project: z.string(),
  runDir: z.string(),
  status: runStatus,
  name: z.string().nullable(),
  command: z.string(),
  backend: z.string(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  exitCode: z.number().nullable(),
  signal: z.string().nullable(),
  problem: z.string().optional(),
  recipe: z.string().optional(),
  attempt: z.number().optional(),
  workflow: z.string().optional(),
  stage: z.string().optional(),
});

const listedRunSchema = runSummarySchema.extend({
  /** 1-based place in qwexd's queue, for a pending run waiting there. */
  queuePosition: z.number().optional(),
  /** Why a queued run waits beyond its place in the queue (its dependencies, the GPUs it asks for). */
  waitReason: z.string().optional(),
  usage: resourceUsageSchema.optional(),
  waiting: waitingSchema.optional(),
  /** The GPUs an active run holds. */
  gpus: z.array(runGpu).optional(),
});

const runViewSchema = z.object({
  run: runSchema,
  dir: z.string(),
  queuePosition: z.number().optional(),
  waitReason: z.string().optional(),
  usage: resourceUsageSchema.optional(),
  /** The attempt created after this run failed (its retry), once there is one. */
  nextAttempt: z.string().optional(),
  /** For a run of a named job: the job's version in qwex.yaml now (null: no longer defined), and whether it differs from the run's. */
  recipeNow: z.object({ version: z.string().nullable(), changed: z.boolean() }).optional(),
});

const stagePlanShape = z.strictObject({
  name: text(256),
  needs: z.array(text(256)).max(Bounds.list),
  continueOnFailure: z.boolean(),
  job: jobSchema,
});
const stagePlanSchema: z.ZodType<StagePlan> = stagePlanShape;

const workflowStatus = z.enum(WORKFLOW_STATUSES);

const stageViewSchema = z.object({
  name: z.string(),
  needs: z.array(z.string()),
  continueOnFailure: z.boolean(),
  backend: z.string(),
  /** The stage's current run (its latest attempt); null until it is created. */
  runId: z.string().nullable(),
  status: runStatus,
  exitCode: z.number().nullable(),
  attempt: z.number().optional(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  /** Why it waits, or why it ended without succeeding. */
  reason: z.string().optional(),
  /** Its run failed and another attempt is coming. */
  retrying: z.boolean().optional(),
});

const workflowViewShape = z.object({
  id: z.string(),
  name: z.string().nullable(),
  project: z.string(),
  source: z.string(),
  status: workflowStatus,
  exitCode: z.number().nullable(),
  createdAt: z.string(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  cancelRequested: z.boolean().optional(),
  resumed: z.number().optional(),
  snapshot: z.string().nullable(),
  stages: z.array(stageViewSchema),
});
const workflowViewSchema: z.ZodType<WorkflowView> = workflowViewShape;

/** A workflow named by its id or a unique prefix, in `project` (else in any project qwexd knows). */
const workflowRef = { id: runId(), project: absolutePath().optional() };

const daemonStatusSchema = z.object({
  version: z.string(),
  protocolVersion: z.number(),
  pid: z.number(),
  startedAt: z.string(),
  uptimeMs: z.number(),
  socket: z.string(),
  concurrency: z.number(),
  runs: z.object({ queued: z.number(), running: z.number() }),
  connections: z.number(),
  subscriptions: z.number(),
  /** Requests (batch members included) received and not yet answered, on all connections, the asking one included. */
  pendingRequests: z.number(),
});

/** `params` absent or `{}`. */
const none = z.strictObject({}).optional();
const ok = z.object({ ok: z.literal(true) });
const stream = z.enum(['stdout', 'stderr']);

export const methods = {
  'qwex.hello': {
    params: z.strictObject({ protocolVersion: z.number().int(), client: text(256).optional() }),
    result: z.object({ protocolVersion: z.number(), daemonVersion: z.string(), pid: z.number() }),
  },
  'run.submit': {
    /** Jobs are resolved by the client (config, cwd); `env` is the submitter's environment, the base for every job. */
    params: z.strictObject({
      project: absolutePath(),
      jobs: z.array(jobSchema).min(1).max(Bounds.jobs),
      env: env(),
      provenance: z.array(provenanceSchema.nullable()).max(Bounds.jobs).optional(),
      /** Chosen by the client: the same id sent again (a retry after a lost connection) gets the same runs, never new ones. */
      submissionId: z.string().regex(/^[0-9a-f-]{8,64}$/).optional(),
    }),
    result: z.object({ runs: z.array(runSchema) }),
    whenTooLarge: 'submit fewer jobs per request',
  },
  'run.cancel': {
    params: z.strictObject({ id: runId(), graceMs: count().optional() }),
    result: z.object({ run: runSchema }),
  },
  'run.get': {
    params: z.strictObject({ id: runId() }),
    result: runViewSchema,
  },
  'run.list': {
    params: z.strictObject({
      project: path().optional(),
      statuses: z.array(runStatus).max(RUN_STATUSES.length).optional(),
      limit: count().optional(),
      /** Only runs of this named job. */
      recipe: text().optional(),
    }),
    result: z.object({ runs: z.array(listedRunSchema) }),
    whenTooLarge: 'fewer runs: a smaller `limit` (the newest N), or a `project` or `statuses` filter',
  },
  'logs.subscribe': {
    params: z.strictObject({ id: runId(), stdoutOffset: count().optional(), stderrOffset: count().optional(), streams: z.array(stream).max(2).optional() }),
    result: z.object({ subscription: z.string(), runId: z.string() }),
  },
  'logs.unsubscribe': {
    params: z.strictObject({ subscription: z.string().min(1).max(Bounds.id) }),
    result: ok,
  },
  'workflow.submit': {
    /** Stages are resolved by the client (config, cwd, the one workspace snapshot); `env` is the submitter's environment. */
    params: z.strictObject({
      project: absolutePath(),
      name: text(256).nullable(),
      source: path(),
      stages: z.array(stagePlanSchema).min(1).max(Bounds.jobs),
      env: env(),
      provenance: provenanceSchema.optional(),
    }),
    result: workflowViewSchema,
  },
  'workflow.get': { params: z.strictObject(workflowRef), result: workflowViewSchema },
  'workflow.list': {
    params: z.strictObject({ project: absolutePath().optional(), limit: count().optional() }),
    result: z.object({ workflows: z.array(workflowViewSchema) }),
    whenTooLarge: 'fewer workflows: a smaller `limit` (the newest N), or a `project`',
  },
  'workflow.cancel': { params: z.strictObject(workflowRef), result: workflowViewSchema },
  'workflow.retry': { params: z.strictObject({ ...workflowRef, env: env() }), result: workflowViewSchema },
  'daemon.status': { params: none, result: daemonStatusSchema },
  'daemon.shutdown': { params: none, result: ok },
} as const;

/** Server-to-client notifications. There are no client-to-server ones. */
export const notifications = {
  'logs.data': z.object({
    subscription: z.string(),
    runId: z.string(),
    stream,
    /** Byte offset of `data` in the stream's log file. */
    offset: z.number(),
    /** The bytes, base64-encoded (output may be binary). */
    data: z.string(),
  }),
  'logs.end': z.object({
    subscription: z.string(),
    runId: z.string(),
    reason: z.enum(['run-ended', 'unsubscribed', 'daemon-shutdown']),
    /** The record as it stood when the subscription ended (final when reason is run-ended). */
    run: runSchema,
  }),
} as const;

/** Both ways assignable. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/**
 * The schema and the interface describe the same values: both ways
 * assignable, and with the same keys at every level of nested objects
 * (assignability alone lets one side lack an optional key).
 */
type Exactly<A, B> =
  Same<A, B> extends false
    ? false
    : [A, B] extends [readonly (infer X)[], readonly (infer Y)[]]
      ? Exactly<X, Y>
      : [A, B] extends [object, object]
        ? SameKeys<A, B>
        : true;
type SameKeys<A, B> =
  Same<keyof A, keyof B> extends false ? false : false extends { [K in keyof A & keyof B]-?: Exactly<NonNullable<A[K]>, NonNullable<B[K]>> }[keyof A & keyof B] ? false : true;
// Compile-time only: the run model stays TypeScript interfaces (src/run.ts), and these schemas must not drift from them.
const sameAsRunModel: [
  Exactly<z.output<typeof jobShape>, Job>,
  Exactly<z.output<typeof provenanceSchema>, Provenance>,
  Exactly<z.output<typeof runShape>, Run>,
  Exactly<z.output<typeof runSummarySchema>, RunSummary>,
  Exactly<z.output<typeof waitingSchema>, Waiting>,
  Exactly<z.output<typeof stagePlanShape>, StagePlan>,
  Exactly<z.output<typeof workflowViewShape>, WorkflowView>,
] = [true, true, true, true, true, true, true];
void sameAsRunModel;
