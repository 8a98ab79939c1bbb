import { readFileSync } from 'node:fs';
import { loadConfig } from '../../src/config/config.js';
import { ErrorCode, QwexError, errnoCode } from '../../src/errors.js';
import { buildJob, parseJobLines, type JobSpec } from '../../src/config/job.js';
import type { Context } from '../context.js';
import { backendFlagOptions, containerSpec, parseDuration, parseEnv, parseWatch, type ContainerFlags } from '../parse.js';
import { publicRun } from '../render.js';
import { prepareWorkspaces, workspaceMode } from '../../src/workspace/prepare.js';

interface SubmitOptions extends ContainerFlags {
  backend?: string;
  watch?: string;
  env: string[];
  timeout?: string;
  grace?: string;
  json?: boolean;
  snapshot?: boolean;
  inPlace?: boolean;
}

/**
 * `qwex submit FILE` (or `-` for stdin): many jobs in one request. Prints
 * the run ids in order, one per line, so `qwex wait $(qwex submit jobs.txt)`
 * works. Starts qwexd if it is not running: it is what queues them.
 */
export default async function submit(ctx: Context, file: string, options: SubmitOptions): Promise<number> {
  const source = file === '-' ? 'stdin' : file;
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (error) {
    throw new QwexError(ErrorCode.Usage, `cannot read ${source}: ${errnoCode(error) ?? (error as Error).message}`);
  }
  const { config } = await loadConfig(ctx.project);
  const container = containerSpec(options);
  const backendOptions = backendFlagOptions(options as unknown as Record<string, unknown>);
  const defaults: Partial<JobSpec> = {
    env: parseEnv(options.env),
    ...(container === undefined ? {} : { container }),
    ...(backendOptions === undefined ? {} : { options: backendOptions }),
    ...(options.backend === undefined ? {} : { backend: options.backend }),
    ...(options.watch === undefined ? {} : { watch: parseWatch(options.watch) }),
    ...(options.timeout === undefined ? {} : { timeoutMs: parseDuration(options.timeout, '--timeout') }),
    ...(options.grace === undefined ? {} : { killGraceMs: parseDuration(options.grace, '--grace') }),
  };
  const jobs = parseJobLines(text, source).map((spec, i) => {
    try {
      const merged = { ...defaults, ...spec, env: { ...defaults.env, ...spec.env } };
      if (defaults.options || spec.options) merged.options = { ...defaults.options, ...spec.options };
      if (defaults.container || spec.container) merged.container = { ...defaults.container, ...spec.container, env: { ...defaults.container?.env, ...spec.container?.env } };
      return buildJob(merged, config, ctx.cwd, ctx.project);
    } catch (error) {
      if (error instanceof QwexError) throw new QwexError(error.code, `${source}, job ${i + 1}: ${error.message}`, error.hint ? { hint: error.hint } : {});
      throw error;
    }
  });
  if (jobs.length === 0) {
    process.stderr.write(`no jobs in ${source}\n`);
    return 0;
  }
  const provenance = await prepareWorkspaces(jobs, ctx.project, config, workspaceMode({ snapshot: options.snapshot, inPlace: options.inPlace }, config, false));
  // qwexd is what queues them: it is started when it is not running (direct mode, with QWEX_NO_DAEMON=1, starts every job now).
  const service = await ctx.service({ startDaemon: (pid) => process.stderr.write(`started qwexd (pid ${pid}) to queue ${jobs.length} run(s)\n`) });
  const runs = await service.submit({ project: ctx.project, jobs, provenance });
  process.stdout.write(options.json ? `${JSON.stringify(runs.map(publicRun), null, 2)}\n` : `${runs.map((r) => r.id).join('\n')}\n`);
  return 0;
}
