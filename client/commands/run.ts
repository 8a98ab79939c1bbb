import { loadConfig } from '../../src/config/config.js';
import { buildJob } from '../../src/config/job.js';
import { prepareWorkspaces, workspaceMode } from '../../src/workspace/prepare.js';
import { exitCodeOf, isTerminal } from '../../src/run/model.js';
import { runDir } from '../../src/paths.js';
import type { Context } from '../context.js';
import { writer } from '../context.js';
import { backendFlagOptions, containerSpec, parseDuration, parseEnv, parseWatch, type ContainerFlags } from '../parse.js';
import { publicRun, startLine, styleFor, summaryLine } from '../render.js';

interface RunOptions extends ContainerFlags {
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
  notify?: string[];
}

export default async function run(ctx: Context, args: string[], options: RunOptions): Promise<number> {
  const { config } = await loadConfig(ctx.project);
  const timeoutMs = options.timeout === undefined ? undefined : parseDuration(options.timeout, '--timeout');
  const container = containerSpec(options);
  const backendOptions = backendFlagOptions(options as unknown as Record<string, unknown>);
  const job = buildJob(
    {
      ...(container === undefined ? {} : { container }),
      ...(backendOptions === undefined ? {} : { options: backendOptions }),
      command: args,
      shell: options.shell === true,
      env: parseEnv(options.env),
      ...(options.backend === undefined ? {} : { backend: options.backend }),
      ...(options.watch === undefined ? {} : { watch: parseWatch(options.watch) }),
      ...(options.grace === undefined ? {} : { killGraceMs: parseDuration(options.grace, '--grace') }),
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(options.name === undefined ? {} : { name: options.name }),
      ...(options.notify && options.notify.length > 0 ? { notify: options.notify } : {}),
    },
    config,
    ctx.cwd,
    ctx.project,
  );

  const mode = workspaceMode({ snapshot: options.snapshot, inPlace: options.inPlace }, config, !options.detach);
  const [provenance] = await prepareWorkspaces([job], ctx.project, config, mode);
  // Notifications are sent by qwexd: a run that asks for them starts it, as `qwex submit` does.
  const service = await ctx.service({ startDaemon: job.notify !== undefined });
  const [submitted] = await service.submit({ project: ctx.project, jobs: [job], provenance: [provenance] });
  const ref = { id: submitted!.id, dir: runDir(ctx.project, submitted!.id) };
  if (options.detach) {
    process.stdout.write(options.json ? `${JSON.stringify(publicRun(submitted!), null, 2)}\n` : `${submitted!.id}\n`);
    return 0;
  }

  const errStyle = styleFor(process.stderr);
  const say = (line: string): void => {
    if (!options.quiet) process.stderr.write(`${line}\n`);
  };
  say(startLine(errStyle, submitted!, service.via === 'qwexd' ? 'qwexd' : undefined));

  // Ctrl-C cancels the run (it is still recorded); a second Ctrl-C stops waiting and leaves the cancel to finish.
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
    const final = await service.follow(ref, {
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

