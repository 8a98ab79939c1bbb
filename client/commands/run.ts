import { loadConfig } from '../../src/config/config.js';
import { buildJob, type JobSpec } from '../../src/config/job.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { prepareWorkspaces, workspaceMode } from '../../src/workspace/prepare.js';
import type { Job, RunDependencies } from '../../src/run/model.js';
import type { Context } from '../context.js';
import { backendFlagOptions, containerSpec, parseDuration, parseEnv, parseWatch, type ContainerFlags } from '../parse.js';
import { showsProgress } from '../style.js';

export interface RunOptions extends ContainerFlags {
  detach?: boolean;
  backend?: string;
  watch?: string;
  env: string[];
  shell?: boolean;
  name?: string;
  timeout?: string;
  grace?: string;
  quiet?: boolean;
  json?: boolean;
  snapshot?: boolean;
  inPlace?: boolean;
  job?: string;
  set: string[];
  grid: string[];
  after?: string;
  afterAny?: string;
  notify?: string[];
}

export default async function run(ctx: Context, args: string[], options: RunOptions): Promise<number> {
  const { config } = await loadConfig(ctx.project);
  const timeoutMs = options.timeout === undefined ? undefined : parseDuration(options.timeout, '--timeout');
  const container = containerSpec(options);
  const backendOptions = backendFlagOptions(options as unknown as Record<string, unknown>);
  const flags: Partial<JobSpec> = {
    ...(container === undefined ? {} : { container }),
    ...(backendOptions === undefined ? {} : { options: backendOptions }),
    ...(options.shell ? { shell: true } : {}),
    env: parseEnv(options.env),
    ...(options.backend === undefined ? {} : { backend: options.backend }),
    ...(options.watch === undefined ? {} : { watch: parseWatch(options.watch) }),
    ...(options.grace === undefined ? {} : { killGraceMs: parseDuration(options.grace, '--grace') }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(options.name === undefined ? {} : { name: options.name }),
    ...(options.notify && options.notify.length > 0 ? { notify: options.notify } : {}),
  };
  let jobs: Job[];
  if (options.job !== undefined) {
    // Named jobs (and their parameters) are loaded only for -j: a plain `qwex run` needs none of the workflow code.
    const [{ parseAssignment }, { recipeJobs }] = await Promise.all([import('../../src/workflow/definition.js'), import('../../src/workflow/plan.js')]);
    const sets = Object.fromEntries(options.set.map((s) => parseAssignment(s, '--set')));
    const grid = options.grid.map((g): [string, string[]] => {
      const [name, values] = parseAssignment(g, '--grid');
      return [name, values.split(',')];
    });
    jobs = recipeJobs(config, ctx.project, options.job, { sets, grid, extraArgs: args, overrides: flags });
  } else {
    if (args.length === 0) throw new QwexError(ErrorCode.Usage, 'no command given', { hint: 'qwex run [options] <command...>, or qwex run -j NAME for a job of qwex.yaml' });
    if (options.set.length > 0 || options.grid.length > 0) throw new QwexError(ErrorCode.Usage, '--set and --grid are parameters of a named job', { hint: 'add -j NAME (`qwex jobs` lists them)' });
    jobs = [buildJob({ ...flags, command: args, shell: options.shell === true }, config, ctx.cwd, ctx.project)];
  }
  const after = dependencies(ctx, options);
  if (after) jobs = jobs.map((job) => ({ ...job, after }));

  const sweep = options.grid.length > 0;
  const mode = workspaceMode({ snapshot: options.snapshot, inPlace: options.inPlace }, config, !options.detach && !sweep);
  // What a detached run in a script needs is loaded up front; the progress line, the rendering of records and the
  // following of a run in the foreground only when they are used.
  const line = showsProgress(options) ? new (await import('../progress.js')).ProgressLine() : undefined;
  let provenance: Awaited<ReturnType<typeof prepareWorkspaces>>;
  try {
    provenance = await prepareWorkspaces(jobs, ctx.project, config, mode, line ? { progress: line.progress() } : {});
  } finally {
    line?.close();
  }
  // qwexd is what holds a run until its dependencies ended, queues a sweep, creates retries and hands out
  // this machine's GPUs: it is started when a run needs it.
  const wantsGpus = jobs.some((job) => job.gpus !== undefined);
  const wantsNotify = jobs.some((job) => job.notify !== undefined);
  const needsDaemon = sweep || wantsGpus || wantsNotify || jobs.some((job) => job.after !== undefined || job.retry !== undefined);
  const why = wantsGpus && !sweep ? ' to hand out GPUs' : wantsNotify && !sweep ? ' to send notifications' : '';
  const service = await ctx.service(needsDaemon ? { startDaemon: (pid) => void (options.quiet || process.stderr.write(`started qwexd (pid ${pid})${why}\n`)) } : {});
  if (needsDaemon && service.via !== 'qwexd' && !wantsGpus && !wantsNotify) {
    throw new QwexError(ErrorCode.DaemonUnavailable, '--after, --grid and retries are handled by qwexd, and QWEX_NO_DAEMON=1 is set', { hint: 'unset QWEX_NO_DAEMON' });
  }
  const submitted = await service.submit({ project: ctx.project, jobs, provenance });
  if (sweep || options.detach) {
    const shown = sweep ? submitted : [submitted[0]!];
    if (!options.json) process.stdout.write(`${shown.map((r) => r.id).join('\n')}\n`);
    else {
      const { publicRun } = await import('../render.js');
      process.stdout.write(`${JSON.stringify(sweep ? shown.map(publicRun) : publicRun(shown[0]!), null, 2)}\n`);
    }
    return 0;
  }
  const { foreground } = await import('../foreground.js');
  return foreground(service, ctx.project, submitted[0]!, { quiet: options.quiet === true, progress: showsProgress(options) });
}

/** --after / --after-any: the runs, resolved to full ids now (a prefix could match a later run too). */
function dependencies(ctx: Context, options: RunOptions): RunDependencies | undefined {
  if (options.after !== undefined && options.afterAny !== undefined) throw new QwexError(ErrorCode.Usage, 'use --after or --after-any, not both');
  const list = options.after ?? options.afterAny;
  if (list === undefined) return undefined;
  const runs = list.split(',').map((p) => p.trim()).filter((p) => p !== '').map((p) => ctx.resolve(p).id);
  if (runs.length === 0) throw new QwexError(ErrorCode.Usage, `${options.after !== undefined ? '--after' : '--after-any'}: no run given`, { hint: 'e.g. --after 019aa011,019aa012' });
  return { runs, require: options.after !== undefined ? 'success' : 'end' };
}
