import { loadConfig } from '../../src/config/config.js';
import { buildJob, type JobSpec } from '../../src/config/job.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { shortId } from '../../src/ids.js';
import { prepareWorkspaces, workspaceMode } from '../../src/workspace/prepare.js';
import { exitCodeOf, isTerminal, type Job, type Run, type RunDependencies } from '../../src/run/model.js';
import { runDir } from '../../src/paths.js';
import type { RunRef, RunService } from '../../src/service/index.js';
import { parseAssignment } from '../../src/workflow/definition.js';
import { recipeJobs } from '../../src/workflow/plan.js';
import { willRetry } from '../../src/workflow/retry.js';
import type { Context } from '../context.js';
import { followOutput } from '../context.js';
import { backendFlagOptions, containerSpec, parseDuration, parseEnv, parseWatch, type ContainerFlags } from '../parse.js';
import { ProgressLine, showsProgress } from '../progress.js';
import { publicRun, startLine, styleFor, summaryLine } from '../render.js';

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
  const line = showsProgress(options) ? new ProgressLine() : undefined;
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
  if (sweep) {
    process.stdout.write(options.json ? `${JSON.stringify(submitted.map(publicRun), null, 2)}\n` : `${submitted.map((r) => r.id).join('\n')}\n`);
    return 0;
  }
  if (options.detach) {
    process.stdout.write(options.json ? `${JSON.stringify(publicRun(submitted[0]!), null, 2)}\n` : `${submitted[0]!.id}\n`);
    return 0;
  }
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

/**
 * Streams a run's output to its end and returns its exit code; a run that
 * will be retried is followed into its next attempt. Ctrl-C cancels the run
 * (it is still recorded); a second Ctrl-C stops waiting.
 */
export async function foreground(service: RunService, project: string, submitted: Run, options: { quiet: boolean; progress?: boolean }): Promise<number> {
  const errStyle = styleFor(process.stderr);
  // What the run's supervisor reports while the run is pending or ending (a sync, a pull, collecting artifacts).
  const progress = options.progress ? new ProgressLine() : undefined;
  const say = (line: string): void => {
    progress?.clear();
    if (!options.quiet) process.stderr.write(`${line}\n`);
  };
  let ref: RunRef = { id: submitted.id, dir: runDir(project, submitted.id) };
  say(startLine(errStyle, submitted, service.via === 'qwexd' ? 'qwexd' : undefined));
  progress?.follow(() => ref.dir);
  const output = followOutput();
  const toStdout = progress ? progress.guard(output.onStdout) : output.onStdout;
  const toStderr = progress ? progress.guard(output.onStderr) : output.onStderr;

  const detach = new AbortController();
  let interrupts = 0;
  const onInterrupt = (): void => {
    interrupts++;
    if (interrupts === 1) {
      say('cancelling (Ctrl-C again to stop waiting)');
      service.cancel(ref).catch(() => {
        // It ended meanwhile: the follow below reports how.
      });
    } else {
      detach.abort();
    }
  };
  process.on('SIGINT', onInterrupt);
  try {
    for (;;) {
      const final = await service.follow(ref, { ...output, onStdout: toStdout, onStderr: toStderr, signal: detach.signal });
      if (detach.signal.aborted && !isTerminal(final.status)) {
        say(`stopped waiting; run ${final.id} is ${final.status}`);
        return 130;
      }
      say(summaryLine(errStyle, final));
      if (!willRetry(final) || interrupts > 0) return exitCodeOf(final);
      const next = await nextAttempt(service, ref, detach.signal);
      if (next === undefined) return exitCodeOf(final);
      ref = { id: next, dir: runDir(project, next) };
      say(`retrying: attempt ${(final.job.attempt?.number ?? 1) + 1} of ${final.job.retry!.limit + 1} is run ${shortId(next)}`);
      if (interrupts > 0) {
        await service.cancel(ref).catch(() => {});
        return 130;
      }
    }
  } finally {
    process.off('SIGINT', onInterrupt);
    progress?.close();
  }
}

const ATTEMPT_POLL_MS = 200;

/** The attempt qwexd creates after a failed run, once it is there (undefined when waiting is aborted). */
async function nextAttempt(service: RunService, ref: RunRef, signal: AbortSignal): Promise<string | undefined> {
  while (!signal.aborted) {
    const view = await service.get(ref);
    if (view.nextAttempt !== undefined) return view.nextAttempt;
    await new Promise((resolve) => setTimeout(resolve, ATTEMPT_POLL_MS));
  }
  return undefined;
}
