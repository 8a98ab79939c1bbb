import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { BACKENDS, findBackend } from '../backends/registry.js';
import { shellQuote } from '../backends/shell-quote.js';
import type { Defined, QwexConfig } from '../config/config.js';
import type { StageFile, TaskFile } from '../config/file.js';
import type { JobSpec } from '../config/job.js';
import { ErrorCode, QwexError } from '../errors.js';
import type { RecipeRef, RetryPolicy } from '../run/model.js';

/**
 * Named jobs and workflow stages as qwex.yaml defines them, turned into
 * job specs: parameters filled in, the workflow's graph checked (every
 * `needs` names a stage, no cycle, container stages have an image) before
 * anything runs. Errors name the file, the key and what was expected.
 */

/** How long a retry waits by default before the second attempt. */
export const DEFAULT_RETRY_BACKOFF_SECONDS = 5;

const GENERIC_KEYS = new Set([
  'command', 'shell', 'cwd', 'backend', 'env', 'watch', 'timeout_seconds', 'kill_grace_seconds', 'retries', 'retry_on', 'retry_backoff_seconds', 'params',
  'name', 'job', 'needs', 'continue_on_failure',
]);
const CONTAINER_KEYS = ['image', 'pull', 'user', 'network', 'cpus', 'memory', 'gpus', 'mounts'] as const;

/** A named job from the configuration; QWEX_USAGE naming the defined ones when there is none of that name. */
export function namedJob(config: QwexConfig, name: string): Defined<TaskFile> {
  const found = config.jobs[name];
  if (found) return found;
  const names = Object.keys(config.jobs);
  throw new QwexError(ErrorCode.Usage, `no job "${name}" in qwex.yaml`, {
    hint: names.length ? `jobs: ${names.join(', ')} (\`qwex jobs\` lists them)` : 'define one under `jobs:` (see docs/workflows.md)',
  });
}

/** The version of a job's definition: a hash of it as written (keys sorted), with the backend it runs on filled in. */
export function recipeVersion(definition: TaskFile, config: QwexConfig): string {
  const body = stableJson({ ...definition, backend: definition.backend ?? config.backend });
  return createHash('sha256').update(body).digest('hex').slice(0, 12);
}

/** The parameters of a run: the definition's defaults, then `sets` (which must name declared parameters). */
export function resolveParams(definition: TaskFile, sets: Record<string, string>, what: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const [name, value] of Object.entries(definition.params ?? {})) params[name] = String(value);
  for (const [name, value] of Object.entries(sets)) {
    if (!(name in params)) {
      const known = Object.keys(params);
      throw new QwexError(ErrorCode.Usage, `${what} has no parameter "${name}"`, {
        hint: known.length ? `its parameters: ${known.join(', ')}` : `declare it under params: in its definition, with a default`,
      });
    }
    params[name] = value;
  }
  return params;
}

/** The cross product of the values of each parameter, the first varying slowest: `--grid a=1,2 --grid b=x,y` gives 4. */
export function expandGrid(grid: readonly (readonly [string, readonly string[]])[]): Record<string, string>[] {
  let combos: Record<string, string>[] = [{}];
  for (const [name, values] of grid) combos = combos.flatMap((c) => values.map((v) => ({ ...c, [name]: v })));
  return combos;
}

/** "lr=0.1" / "lr=0.1,0.01" as given to --set / --grid. */
export function parseAssignment(text: string, flag: string): [string, string] {
  const eq = text.indexOf('=');
  const name = eq === -1 ? text : text.slice(0, eq);
  if (eq === -1 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    throw new QwexError(ErrorCode.Usage, `${flag}: "${text}" is not NAME=VALUE`, { hint: `e.g. ${flag} lr=0.01` });
  }
  return [name, text.slice(eq + 1)];
}

/** The environment variable a parameter is passed in: QWEX_PARAM_<NAME>. */
export function paramVariable(name: string): string {
  return `QWEX_PARAM_${name.toUpperCase()}`;
}

/**
 * The job spec of a definition with these parameters: `{name}` placeholders
 * of declared parameters replaced in the command (as written, unquoted),
 * each parameter also in QWEX_PARAM_<NAME>; `extraArgs` appended (quoted,
 * when the command is one shell line). cwd is relative to the project root.
 */
export function taskSpec(definition: TaskFile, params: Record<string, string>, extraArgs: readonly string[] = []): JobSpec {
  const fill = (text: string): string => text.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (whole, name: string) => params[name] ?? whole);
  const command = definition.command;
  if (command === undefined) throw new QwexError(ErrorCode.ConfigInvalid, 'no command');
  const args = typeof command === 'string' ? [fill(command)] : command.map(fill);
  if (extraArgs.length > 0) {
    if (typeof command === 'string') args[0] = `${args[0]} ${extraArgs.map(shellQuote).join(' ')}`;
    else args.push(...extraArgs);
  }
  const container = Object.fromEntries(CONTAINER_KEYS.filter((k) => definition[k] !== undefined).map((k) => [k, definition[k]]));
  const options = Object.fromEntries(Object.entries(definition).filter(([k, v]) => v !== undefined && !GENERIC_KEYS.has(k) && !(CONTAINER_KEYS as readonly string[]).includes(k)));
  const paramEnv = Object.fromEntries(Object.entries(params).map(([name, value]) => [paramVariable(name), value]));
  return {
    command: typeof command === 'string' ? args[0]! : args,
    ...(definition.shell === undefined ? {} : { shell: definition.shell }),
    ...(definition.cwd === undefined ? {} : { cwd: definition.cwd }),
    env: { ...paramEnv, ...definition.env },
    ...(definition.backend === undefined ? {} : { backend: definition.backend }),
    ...(definition.watch === undefined ? {} : { watch: definition.watch }),
    ...(definition.timeout_seconds === undefined ? {} : { timeoutMs: Math.round(definition.timeout_seconds * 1000) }),
    ...(definition.kill_grace_seconds === undefined ? {} : { killGraceMs: Math.round(definition.kill_grace_seconds * 1000) }),
    ...(Object.keys(container).length === 0 ? {} : { container }),
    ...(Object.keys(options).length === 0 ? {} : { options }),
  };
}

/** The retry policy a definition asks for, if any. */
export function retryPolicy(definition: TaskFile): RetryPolicy | undefined {
  if (!definition.retries) return undefined;
  return {
    limit: definition.retries,
    on: definition.retry_on ?? ['failed', 'lost'],
    backoffMs: Math.round((definition.retry_backoff_seconds ?? DEFAULT_RETRY_BACKOFF_SECONDS) * 1000),
  };
}

export function recipeOf(name: string, definition: TaskFile, config: QwexConfig, params: Record<string, string>): RecipeRef {
  return { name, version: recipeVersion(definition, config), params };
}

/** One stage, checked: its spec (the named job it uses, with the stage's own keys over it) and its place in the graph. */
export interface StageDraft {
  name: string;
  needs: string[];
  continueOnFailure: boolean;
  spec: JobSpec;
  retry?: RetryPolicy;
  recipe?: RecipeRef;
  /** Where it is defined, for errors: `stages.1` or `workflows.NAME.stages.1`. */
  key: string;
}

/**
 * The stages of the top-level `stages:` (no name) or of `workflows.NAME`,
 * checked as a whole. A stage without `needs:` needs the one before it.
 */
export function planStages(config: QwexConfig, name: string | undefined): { source: string; name: string | null; stages: StageDraft[] } {
  const defined = name === undefined ? config.stages : config.workflows[name];
  if (!defined) {
    const names = Object.keys(config.workflows);
    if (name === undefined) {
      throw new QwexError(ErrorCode.Usage, 'qwex.yaml has no top-level `stages:`', {
        hint: names.length ? `name a workflow: ${names.join(', ')}` : 'define stages: a list of {name, command, backend, needs...} (see docs/workflows.md)',
      });
    }
    throw new QwexError(ErrorCode.Usage, `no workflow "${name}" in qwex.yaml`, { hint: names.length ? `workflows: ${names.join(', ')}` : 'define it under workflows: NAME: stages: [...]' });
  }
  const { value: stages, file } = defined;
  const base = name === undefined ? 'stages' : `workflows.${name}.stages`;
  const where = basename(file);
  const fail = (key: string, message: string, hint?: string): never => {
    throw new QwexError(ErrorCode.ConfigInvalid, `${where}: ${key}: ${message}`, { ...(hint ? { hint } : {}), details: { file, key } });
  };
  const names = stages.map((s) => s.name);
  stages.forEach((stage, i) => {
    if (names.indexOf(stage.name) !== i) fail(`${base}.${i}.name`, `expected a name no other stage has, got "${stage.name}" again`);
  });
  const drafts = stages.map((stage, i) => draftStage(stage, i, stages, config, `${base}.${i}`, fail));
  const cycle = findCycle(drafts);
  if (cycle) {
    const at = drafts.findIndex((d) => d.name === cycle[0]);
    fail(`${base}.${at}.needs`, `expected stages that do not need each other in a circle, got a cycle: ${cycle.join(' → ')}`);
  }
  return { source: file, name: name ?? null, stages: drafts };
}

function draftStage(stage: StageFile, i: number, all: readonly StageFile[], config: QwexConfig, key: string, fail: (key: string, message: string, hint?: string) => never): StageDraft {
  let definition: TaskFile = { ...stage };
  let recipe: RecipeRef | undefined;
  if (stage.job !== undefined) {
    const job = config.jobs[stage.job];
    if (!job) fail(`${key}.job`, `expected the name of a job under jobs: (${Object.keys(config.jobs).join(', ') || 'none defined'}), got "${stage.job}"`);
    const { name: _name, job: _job, needs: _needs, continue_on_failure: _c, params: stageParams, ...own } = stage;
    let params: Record<string, string> = {};
    try {
      params = resolveParams(job!.value, Object.fromEntries(Object.entries(stageParams ?? {}).map(([k, v]) => [k, String(v)])), `job "${stage.job}"`);
    } catch (error) {
      fail(`${key}.params`, `expected parameters of job "${stage.job}": ${(error as Error).message}`, (error as QwexError).hint);
    }
    // The stage's keys win; its env adds to the job's.
    definition = { ...job!.value, ...definedOnly(own), params, ...(job!.value.env || own.env ? { env: { ...job!.value.env, ...own.env } } : {}) };
    recipe = recipeOf(stage.job, job!.value, config, params);
  }
  if (definition.command === undefined) fail(`${key}.command`, `expected the command of stage "${stage.name}" (a string or a list of strings), got nothing`);
  const backendName = definition.backend ?? config.backend;
  const backend = findBackend(backendName);
  if (backend?.traits.container && definition.image === undefined && typeof config.backends[backendName]?.image !== 'string') {
    fail(`${key}.image`, `expected an image for the ${backendName} stage "${stage.name}" (on the stage, or as backends.${backendName}.image), got nothing`);
  }
  for (const option of Object.keys(definition)) {
    if (GENERIC_KEYS.has(option) || (CONTAINER_KEYS as readonly string[]).includes(option) || definition[option] === undefined) continue;
    if (!backend?.optionKeys.includes(option)) {
      const takers = BACKENDS.filter((b) => b.optionKeys.includes(option)).map((b) => b.name);
      fail(`${key}.${option}`, `expected a key of a ${backendName} stage, got ${option} (a key of ${takers.length > 1 ? `${takers.slice(0, -1).join(', ')} and ${takers.at(-1)}` : takers[0]} stages)`);
    }
  }
  const needs = stage.needs ?? (i === 0 ? [] : [all[i - 1]!.name]);
  needs.forEach((need, j) => {
    if (!all.some((s) => s.name === need)) {
      fail(`${key}.needs.${j}`, `expected the name of another stage (${all.map((s) => s.name).filter((n) => n !== stage.name).join(', ') || 'there is none'}), got "${need}"`);
    }
  });
  const params = Object.fromEntries(Object.entries(definition.params ?? {}).map(([k, v]) => [k, String(v)]));
  const retry = retryPolicy(definition);
  return {
    name: stage.name,
    needs: [...new Set(needs)],
    continueOnFailure: stage.continue_on_failure === true,
    spec: taskSpec(definition, params),
    ...(retry ? { retry } : {}),
    ...(recipe ? { recipe } : {}),
    key,
  };
}

/** A cycle of needs, as stage names from the first back to it, or undefined. */
function findCycle(stages: readonly StageDraft[]): string[] | undefined {
  const byName = new Map(stages.map((s) => [s.name, s]));
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (name: string): string[] | undefined => {
    if (state.get(name) === 'done') return undefined;
    if (state.get(name) === 'open') return [...path.slice(path.indexOf(name)), name];
    state.set(name, 'open');
    path.push(name);
    for (const need of byName.get(name)?.needs ?? []) {
      const found = visit(need);
      if (found) return found;
    }
    path.pop();
    state.set(name, 'done');
    return undefined;
  };
  for (const stage of stages) {
    const found = visit(stage.name);
    if (found) return found;
  }
  return undefined;
}

/** The stages in an order where each comes after what it needs (the order written, where the graph allows). */
export function topologicalOrder<T extends { name: string; needs: readonly string[] }>(stages: readonly T[]): T[] {
  const done = new Set<string>();
  const out: T[] = [];
  while (out.length < stages.length) {
    const next = stages.find((s) => !done.has(s.name) && s.needs.every((n) => done.has(n)));
    if (!next) return [...out, ...stages.filter((s) => !done.has(s.name))]; // a cycle: checked before submit
    done.add(next.name);
    out.push(next);
  }
  return out;
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** JSON with object keys sorted at every level: equal definitions hash equal whatever their key order. */
function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
