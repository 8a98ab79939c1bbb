import { basename, isAbsolute, join, relative } from 'node:path';
import { backendDescriptor } from '../backends/registry.js';
import type { QwexConfig } from '../config/config.js';
import { buildJob, type JobSpec } from '../config/job.js';
import { ErrorCode, QwexError } from '../errors.js';
import type { Job, Provenance } from '../run/model.js';
import { gitProvenance } from '../workspace/provenance.js';
import { ContentStore, snapshotWorkspace } from '../workspace/snapshot.js';
import { expandGrid, namedJob, planStages, recipeOf, resolveParams, retryPolicy, taskSpec } from './definition.js';
import type { StagePlan } from './types.js';

/**
 * What a client resolves before it submits: a workflow's stages as jobs
 * (checked, config applied) sharing one workspace snapshot taken now, and
 * the runs of a named job (its parameters, a sweep's cross product).
 */
export interface WorkflowPlan {
  name: string | null;
  source: string;
  stages: StagePlan[];
  provenance?: Provenance;
}

export async function planWorkflow(config: QwexConfig, project: string, name: string | undefined): Promise<WorkflowPlan> {
  const planned = planStages(config, name);
  const stages: StagePlan[] = planned.stages.map((draft) => {
    let job: Job;
    try {
      job = buildJob(draft.spec, config, project, project);
    } catch (error) {
      if (!(error instanceof QwexError)) throw error;
      throw new QwexError(ErrorCode.ConfigInvalid, `${basename(planned.source)}: ${draft.key} (stage "${draft.name}"): ${error.message}`, {
        ...(error.hint ? { hint: error.hint } : {}),
        details: { file: planned.source, key: draft.key },
      });
    }
    return {
      name: draft.name,
      needs: draft.needs,
      continueOnFailure: draft.continueOnFailure,
      job: { ...job, ...(draft.retry ? { retry: draft.retry } : {}), ...(draft.recipe ? { recipe: draft.recipe } : {}) },
    };
  });
  const provenance = await snapshotOnce(stages.map((s) => s.job), project, config);
  return { name: planned.name, source: planned.source, stages, ...(provenance ? { provenance } : {}) };
}

/**
 * One snapshot for every job that runs from one (all but a remote run that
 * sends nothing): the project now, without any job's artifact directories.
 */
async function snapshotOnce(jobs: Job[], project: string, config: QwexConfig): Promise<Provenance | undefined> {
  const sent = (job: Job): boolean => {
    const backend = backendDescriptor(job.backend);
    return !backend.traits.remote || (backend.sendsWorkspace?.(job) ?? true);
  };
  if (!jobs.some(sent)) return undefined;
  const exclude = new Set<string>();
  for (const job of jobs) {
    const cwd = relative(project, job.cwd);
    if (cwd.startsWith('..') || isAbsolute(cwd)) throw new QwexError(ErrorCode.Usage, `the working directory ${job.cwd} is outside the project ${project}`);
    for (const watch of job.artifacts.watch) exclude.add(relative(project, join(job.cwd, watch)).split('\\').join('/'));
  }
  const manifest = await snapshotWorkspace(project, new ContentStore(), { exclude: [...exclude].sort(), maxBytes: config.workspaceMaxMb * 1e6 });
  for (const job of jobs) {
    if (sent(job)) job.workspace = { mode: 'snapshot', manifest: manifest.id, cwd: relative(project, job.cwd).split('\\').join('/') };
  }
  const git = gitProvenance(project);
  return { manifest: manifest.id, ...(git ? { git } : {}) };
}

export interface RecipeRequest {
  /** --set NAME=VALUE */
  sets: Record<string, string>;
  /** --grid NAME=V1,V2, in the order given */
  grid: [string, string[]][];
  /** Arguments after `--`, appended to the command. */
  extraArgs: string[];
  /** What the command line sets over the definition (backend, env, image...). */
  overrides: Partial<JobSpec>;
}

/** The jobs of `qwex run -j NAME`: one, or one per point of the sweep, each recording the job's name, version and its parameters. */
export function recipeJobs(config: QwexConfig, project: string, name: string, request: RecipeRequest): Job[] {
  const { value: definition } = namedJob(config, name);
  if (definition.command === undefined) throw new QwexError(ErrorCode.ConfigInvalid, `qwex.yaml: jobs.${name}.command: expected a command, got nothing`);
  for (const [param] of request.grid) if (param in request.sets) throw new QwexError(ErrorCode.Usage, `--set and --grid both give "${param}"`);
  const points = expandGrid(request.grid);
  const retry = retryPolicy(definition);
  return points.map((point) => {
    const params = resolveParams(definition, { ...request.sets, ...point }, `job "${name}"`);
    const spec = merge(taskSpec(definition, params, request.extraArgs), request.overrides);
    const label = request.overrides.name ?? (request.grid.length > 0 ? `${name} ${Object.entries(point).map(([k, v]) => `${k}=${v}`).join(' ')}` : name);
    const job = buildJob({ ...spec, name: label }, config, project, project);
    return { ...job, recipe: recipeOf(name, definition, config, params), ...(retry ? { retry } : {}) };
  });
}

function merge(spec: JobSpec, over: Partial<JobSpec>): JobSpec {
  const defined = Object.fromEntries(Object.entries(over).filter(([, v]) => v !== undefined)) as Partial<JobSpec>;
  return {
    ...spec,
    ...defined,
    command: spec.command,
    env: { ...spec.env, ...over.env },
    ...(spec.container || over.container ? { container: { ...spec.container, ...over.container } } : {}),
    ...(spec.options || over.options ? { options: { ...spec.options, ...over.options } } : {}),
  };
}
