import * as z from 'zod/mini';
import en from 'zod/v4/locales/en.js';
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
 * The schemas are zod/mini's: the same checks and messages as zod's classic
 * API, but a bundle takes only the parts it uses. Each is built when first
 * read (a method's params at its first request; results only by tests):
 * qwexd runs for weeks, and what it never uses it does not hold
 * (docs/benchmarks.md, "Idle qwexd").
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

// zod/mini has no messages of its own: English, as zod's classic API sets it (the messages clients get name the same checks).
z.config(en());
// Results are long lists of plain fields: short names keep them readable.
const str = z.string;
const num = z.number;
const opt = z.optional;

const text = (max: number = Bounds.label) => z.string().check(z.maxLength(max));
const path = () => text(Bounds.path);
const absolutePath = () => z.string().check(z.maxLength(Bounds.path), z.startsWith('/'));
const runId = () => z.string().check(z.minLength(1), z.maxLength(Bounds.id));
const count = () => z.number().check(z.int(), z.nonnegative());
const positiveInt = () => z.number().check(z.int(), z.positive());
/** A schema built when first asked for, then kept. */
function once<T>(build: () => T): () => T {
  let built: T | undefined;
  return () => (built ??= build());
}
/** An array of at least `min` and at most `max` items. */
const list = <T extends z.ZodMiniType>(item: T, max: number, min = 0) => z.array(item).check(...(min > 0 ? [z.minLength(min)] : []), z.maxLength(max));

function entries<V extends z.ZodMiniType>(value: V, max: number) {
  return z.record(text(Bounds.envName), value).check(z.refine((record) => Object.keys(record).length <= max, { message: `at most ${max} entries` }));
}
const env = () => entries(text(Bounds.envValue), Bounds.envEntries);
/** A count, every GPU, or which ones (indexes or UUIDs). */
const gpuRequest = () => z.union([positiveInt(), z.literal('all'), list(z.string().check(z.minLength(1), z.maxLength(Bounds.label)), Bounds.list, 1)]);
/** A GPU qwexd handed to a run. */
const runGpu = once(() => z.object({ index: z.number(), uuid: z.string(), name: z.string() }));

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

const artifactSettingsSchema = once((): z.ZodMiniType<ArtifactSettings> => z.strictObject({
  watch: list(path(), Bounds.list),
  ignore: list(path(), Bounds.list),
  maxFileSizeMb: z.number().check(z.positive()),
}));

const jobShape = once(() => z.strictObject({
  command: list(text(Bounds.arg), Bounds.args, 1),
  shell: z.boolean(),
  cwd: absolutePath(),
  env: env(),
  backend: z.string().check(z.minLength(1), z.maxLength(64)),
  backendOptions: entries(z.unknown(), Bounds.optionKeys).check(
    z.refine((options) => depthOf(options, Bounds.optionDepth) <= Bounds.optionDepth, { message: `nested more than ${Bounds.optionDepth} levels deep` }),
  ),
  artifacts: artifactSettingsSchema(),
  killGraceMs: count(),
  timeoutMs: z.optional(positiveInt()),
  name: z.optional(text()),
  workspace: z.optional(z.strictObject({ mode: z.literal('snapshot'), manifest: z.string().check(z.regex(/^[0-9a-f]{64}$/)), cwd: path() })),
  container: z.optional(
    z.strictObject({
      image: z.string().check(z.minLength(1), z.maxLength(Bounds.label)),
      pull: z.enum(['never', 'missing', 'always']),
      user: z.optional(z.string().check(z.minLength(1), z.maxLength(Bounds.label))),
      network: z.optional(z.string().check(z.minLength(1), z.maxLength(Bounds.label))),
      mounts: list(z.strictObject({ source: absolutePath(), target: absolutePath(), readonly: z.boolean() }), Bounds.list),
      env: env(),
      resources: z.strictObject({
        cpus: z.optional(z.number().check(z.positive())),
        memoryBytes: z.optional(positiveInt()),
        gpus: z.optional(gpuRequest()),
      }),
    }),
  ),
  gpus: z.optional(gpuRequest()),
  allGpusVisible: z.optional(z.boolean()),
  recipe: z.optional(z.strictObject({ name: text(), version: text(), params: entries(text(Bounds.arg), Bounds.envEntries) })),
  retry: z.optional(z.strictObject({ limit: count(), on: list(z.enum(['failed', 'lost']), 2), backoffMs: count() })),
  attempt: z.optional(z.strictObject({ of: runId(), number: z.number().check(z.int(), z.gte(2)), notBefore: z.optional(text()) })),
  after: z.optional(z.strictObject({ runs: list(runId(), Bounds.list, 1), require: z.enum(['success', 'end']) })),
  workflow: z.optional(z.strictObject({ id: runId(), stage: text() })),
  rerunOf: z.optional(runId()),
  notify: z.optional(notifySpecSchema()),
}));

/** Typed as the interface, so that inferred types say `Job` (jobShape is checked against it below). */
const jobSchema = once((): z.ZodMiniType<Job> => jobShape());

const provenanceSchema = once(() => z.strictObject({
  manifest: z.optional(text()),
  git: z.optional(z.strictObject({ commit: text(), branch: z.nullable(text()), dirty: z.boolean() })),
}));

const runStatus = once(() => z.enum(RUN_STATUSES as [Run['status'], ...Run['status'][]]));

const runShape = once(() => z.object({
  version: z.literal(1),
  id: str(),
  project: str(),
  job: jobSchema(),
  status: runStatus(),
  createdAt: str(),
  startedAt: opt(str()),
  finishedAt: opt(str()),
  exitCode: z.nullable(num()),
  signal: z.nullable(str()),
  endReason: opt(z.enum(['exit', 'signal', 'cancel', 'timeout', 'lost', 'error'])),
  error: opt(z.object({ code: str(), message: str() })),
  // The backend's name, and its own details (each backend types them in its folder).
  backend: z.looseObject({ name: str() }),
  artifacts: opt(z.object({ count: num(), bytes: num(), skipped: num(), error: opt(str()) })),
  leftovers: opt(num()),
  resources: opt(z.object({ peakRssBytes: num(), cpuSeconds: num() })),
  provenance: opt(provenanceSchema()),
  supervisor: opt(z.enum(['direct', 'qwexd'])),
  gpus: opt(z.array(runGpu())),
  metadata: z.object({ host: str(), user: str(), qwexVersion: str() }),
}));

const runSchema = once((): z.ZodMiniType<Run> => runShape());

export const resourceUsageSchema = once(() => z.object({
  /** Percent of one CPU, summed over the run's process tree. */
  cpuPercent: num(),
  rssBytes: num(),
  processes: num(),
}));

const waitingSchema = once(() => z.object({
  phase: z.enum(['queued', 'pending']),
  reason: opt(str()),
  message: opt(str()),
  position: opt(num()),
  where: opt(str()),
}));

const runSummarySchema = once(() => z.object({
  id: str(),
  project: str(),
  runDir: str(),
  status: runStatus(),
  name: z.nullable(str()),
  command: str(),
  backend: str(),
  createdAt: str(),
  startedAt: z.nullable(str()),
  finishedAt: z.nullable(str()),
  exitCode: z.nullable(num()),
  signal: z.nullable(str()),
  problem: opt(str()),
  recipe: opt(str()),
  attempt: opt(num()),
  workflow: opt(str()),
  stage: opt(str()),
}));

const listedRunSchema = once(() => z.extend(runSummarySchema(), {
  /** 1-based place in qwexd's queue, for a pending run waiting there. */
  queuePosition: opt(num()),
  /** Why a queued run waits beyond its place in the queue (its dependencies, the GPUs it asks for). */
  waitReason: opt(str()),
  usage: opt(resourceUsageSchema()),
  waiting: opt(waitingSchema()),
  /** The GPUs an active run holds. */
  gpus: opt(z.array(runGpu())),
}));

const runViewSchema = once(() => z.object({
  run: runSchema(),
  dir: str(),
  queuePosition: opt(num()),
  waitReason: opt(str()),
  usage: opt(resourceUsageSchema()),
  /** The attempt created after this run failed (its retry), once there is one. */
  nextAttempt: opt(str()),
  /** For a run of a named job: the job's version in qwex.yaml now (null: no longer defined), and whether it differs from the run's. */
  recipeNow: opt(z.object({ version: z.nullable(str()), changed: z.boolean() })),
}));

const stagePlanShape = once(() => z.strictObject({
  name: text(256),
  needs: list(text(256), Bounds.list),
  continueOnFailure: z.boolean(),
  job: jobSchema(),
}));
const stagePlanSchema = once((): z.ZodMiniType<StagePlan> => stagePlanShape());

const workflowStatus = once(() => z.enum(WORKFLOW_STATUSES));

const stageViewSchema = once(() => z.object({
  name: str(),
  needs: z.array(str()),
  continueOnFailure: z.boolean(),
  backend: str(),
  /** The stage's current run (its latest attempt); null until it is created. */
  runId: z.nullable(str()),
  status: runStatus(),
  exitCode: z.nullable(num()),
  attempt: opt(num()),
  startedAt: opt(str()),
  finishedAt: opt(str()),
  /** Why it waits, or why it ended without succeeding. */
  reason: opt(str()),
  /** Its run failed and another attempt is coming. */
  retrying: opt(z.boolean()),
}));

const workflowViewShape = once(() => z.object({
  id: str(),
  name: z.nullable(str()),
  project: str(),
  source: str(),
  status: workflowStatus(),
  exitCode: z.nullable(num()),
  createdAt: str(),
  startedAt: opt(str()),
  finishedAt: opt(str()),
  cancelRequested: opt(z.boolean()),
  resumed: opt(num()),
  snapshot: z.nullable(str()),
  stages: z.array(stageViewSchema()),
}));
const workflowViewSchema = once((): z.ZodMiniType<WorkflowView> => workflowViewShape());

/** A workflow named by its id or a unique prefix, in `project` (else in any project qwexd knows). */
const workflowRef = () => ({ id: runId(), project: opt(absolutePath()) });

const daemonStatusSchema = once(() => z.object({
  version: str(),
  protocolVersion: num(),
  pid: num(),
  startedAt: str(),
  uptimeMs: num(),
  socket: str(),
  concurrency: num(),
  runs: z.object({ queued: num(), running: num() }),
  connections: num(),
  subscriptions: num(),
  /** Requests (batch members included) received and not yet answered, on all connections, the asking one included. */
  pendingRequests: num(),
}));

/** `params` absent or `{}`. */
const none = once(() => opt(z.strictObject({})));
const ok = once(() => z.object({ ok: z.literal(true) }));
const stream = once(() => z.enum(['stdout', 'stderr']));

/** A method's schemas, each built when first read (bindHandlers reads params at the method's first request). */
function method<P extends z.ZodMiniType, R extends z.ZodMiniType>(params: () => P, result: () => R, whenTooLarge?: string) {
  const [p, r] = [once(params), once(result)];
  const schemas = { get params(): P { return p(); }, get result(): R { return r(); } }; // prettier-ignore
  return whenTooLarge === undefined ? schemas : Object.assign(schemas, { whenTooLarge });
}

export const methods = {
  'qwex.hello': method(
    () => z.strictObject({ protocolVersion: z.number().check(z.int()), client: opt(text(256)) }),
    () => z.object({ protocolVersion: num(), daemonVersion: str(), pid: num() }),
  ),
  /** Jobs are resolved by the client (config, cwd); `env` is the submitter's environment, the base for every job. */
  'run.submit': method(
    () =>
      z.strictObject({
        project: absolutePath(),
        jobs: list(jobSchema(), Bounds.jobs, 1),
        env: env(),
        provenance: opt(list(z.nullable(provenanceSchema()), Bounds.jobs)),
        /** Chosen by the client: the same id sent again (a retry after a lost connection) gets the same runs, never new ones. */
        submissionId: opt(z.string().check(z.regex(/^[0-9a-f-]{8,64}$/))),
      }),
    () => z.object({ runs: z.array(runSchema()) }),
    'submit fewer jobs per request',
  ),
  'run.cancel': method(() => z.strictObject({ id: runId(), graceMs: opt(count()) }), () => z.object({ run: runSchema() })),
  'run.get': method(() => z.strictObject({ id: runId() }), runViewSchema),
  'run.list': method(
    /** `recipe`: only runs of this named job. */
    () => z.strictObject({ project: opt(path()), statuses: opt(list(runStatus(), RUN_STATUSES.length)), limit: opt(count()), recipe: opt(text()) }),
    () => z.object({ runs: z.array(listedRunSchema()) }),
    'fewer runs: a smaller `limit` (the newest N), or a `project` or `statuses` filter',
  ),
  'logs.subscribe': method(
    () => z.strictObject({ id: runId(), stdoutOffset: opt(count()), stderrOffset: opt(count()), streams: opt(list(stream(), 2)) }),
    () => z.object({ subscription: str(), runId: str() }),
  ),
  'logs.unsubscribe': method(() => z.strictObject({ subscription: z.string().check(z.minLength(1), z.maxLength(Bounds.id)) }), ok),
  /** Stages are resolved by the client (config, cwd, the one workspace snapshot); `env` is the submitter's environment. */
  'workflow.submit': method(
    () =>
      z.strictObject({
        project: absolutePath(),
        name: z.nullable(text(256)),
        source: path(),
        stages: list(stagePlanSchema(), Bounds.jobs, 1),
        env: env(),
        provenance: opt(provenanceSchema()),
      }),
    workflowViewSchema,
  ),
  'workflow.get': method(() => z.strictObject(workflowRef()), workflowViewSchema),
  'workflow.list': method(
    () => z.strictObject({ project: opt(absolutePath()), limit: opt(count()) }),
    () => z.object({ workflows: z.array(workflowViewSchema()) }),
    'fewer workflows: a smaller `limit` (the newest N), or a `project`',
  ),
  'workflow.cancel': method(() => z.strictObject(workflowRef()), workflowViewSchema),
  'workflow.retry': method(() => z.strictObject({ ...workflowRef(), env: env() }), workflowViewSchema),
  'daemon.status': method(none, daemonStatusSchema),
  'daemon.shutdown': method(none, ok),
};

/** `data`: the bytes at `offset` in the stream's log file, base64-encoded (output may be binary). */
const logDataSchema = once(() => z.object({ subscription: str(), runId: str(), stream: stream(), offset: num(), data: str() }));
/** `run`: the record as it stood when the subscription ended (final when reason is run-ended). */
const logEndSchema = once(() => z.object({ subscription: str(), runId: str(), reason: z.enum(['run-ended', 'unsubscribed', 'daemon-shutdown']), run: runSchema() }));

/** Server-to-client notifications (qwexd does not check what it sends: for types and tests). There are no client-to-server ones. */
export const notifications = {
  get 'logs.data'() { return logDataSchema(); }, // prettier-ignore
  get 'logs.end'() { return logEndSchema(); }, // prettier-ignore
};

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
  Exactly<z.output<ReturnType<typeof jobShape>>, Job>,
  Exactly<z.output<ReturnType<typeof provenanceSchema>>, Provenance>,
  Exactly<z.output<ReturnType<typeof runShape>>, Run>,
  Exactly<z.output<ReturnType<typeof runSummarySchema>>, RunSummary>,
  Exactly<z.output<ReturnType<typeof waitingSchema>>, Waiting>,
  Exactly<z.output<ReturnType<typeof stagePlanShape>>, StagePlan>,
  Exactly<z.output<ReturnType<typeof workflowViewShape>>, WorkflowView>,
] = [true, true, true, true, true, true, true];
void sameAsRunModel;
