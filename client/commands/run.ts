import { commandSpec } from '../../src/command.js';
import { loadConfig } from '../../src/config.js';
import { isBackendName, BACKEND_NAMES } from '../../src/backends/names.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { exitCodeOf, isTerminal, type Job, type Run } from '../../src/run.js';
import { runDir } from '../../src/paths.js';
import { Method } from '../../src/protocol.js';
import { attach } from '../attach.js';
import type { Context } from '../context.js';
import { writer } from '../context.js';
import { parseDuration, parseEnv, parseWatch } from '../parse.js';
import { publicRun, startLine, styleFor, summaryLine } from '../render.js';

interface RunOptions {
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
}

export default async function run(ctx: Context, args: string[], options: RunOptions): Promise<number> {
  const { config } = loadConfig(ctx.project);
  const backend = options.backend ?? config.backend;
  if (!isBackendName(backend)) {
    throw new QwexError(ErrorCode.BackendUnavailable, `backend "${backend}" is not available in this version of qwex`, {
      hint: `available backends: ${BACKEND_NAMES.join(', ')}`,
    });
  }
  const spec = commandSpec(args, { shell: options.shell === true });
  const timeoutMs = options.timeout === undefined ? undefined : parseDuration(options.timeout, '--timeout');
  const job: Job = {
    ...spec,
    cwd: ctx.cwd,
    env: { ...config.env, ...parseEnv(options.env) },
    backend,
    backendOptions: config.backends[backend] ?? {},
    artifacts: { ...config.artifacts, ...(options.watch === undefined ? {} : { watch: parseWatch(options.watch) }) },
    killGraceMs: options.grace === undefined ? config.killGraceSeconds * 1000 : parseDuration(options.grace, '--grace'),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(options.name === undefined ? {} : { name: options.name }),
  };

  const daemon = await ctx.daemon();
  let submitted: Run;
  let dir: string;
  if (daemon) {
    const { runs } = await daemon.request(Method.submit, { project: ctx.project, jobs: [job], env: submitterEnv() });
    submitted = runs[0]!;
    dir = runDir(ctx.project, submitted.id);
  } else {
    ({ run: submitted, dir } = ctx.runner.submit(job, ctx.project));
  }
  if (options.detach) {
    process.stdout.write(options.json ? `${JSON.stringify(publicRun(submitted), null, 2)}\n` : `${submitted.id}\n`);
    return 0;
  }

  const errStyle = styleFor(process.stderr);
  const say = (line: string): void => {
    if (!options.quiet) process.stderr.write(`${line}\n`);
  };
  say(startLine(errStyle, submitted, daemon ? 'qwexd' : undefined));

  // Ctrl-C cancels the run (it is still recorded); a second Ctrl-C stops waiting and leaves the cancel to finish.
  const detach = new AbortController();
  let interrupts = 0;
  const onInterrupt = (): void => {
    interrupts++;
    if (interrupts === 1) {
      say('cancelling (Ctrl-C again to stop waiting)');
      const cancelling = daemon
        ? daemon.request(Method.cancel, { id: submitted.id, graceMs: job.killGraceMs })
        : ctx.runner.cancel(dir, job.killGraceMs);
      cancelling.catch(() => {});
    } else {
      detach.abort();
    }
  };
  process.on('SIGINT', onInterrupt);
  try {
    const final = await attach(ctx, dir, submitted.id, {
      onStdout: writer(process.stdout),
      onStderr: writer(process.stderr),
      signal: detach.signal,
    });
    if (detach.signal.aborted && !isTerminal(final.status)) {
      say(`stopped waiting; run ${final.id} is ${final.status}`);
      return 130;
    }
    say(summaryLine(errStyle, final));
    return exitCodeOf(final);
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

/** The environment a run starts from when qwexd starts it: this shell's. */
function submitterEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) if (value !== undefined) env[name] = value;
  return env;
}
