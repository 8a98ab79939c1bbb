import { join } from 'node:path';
import { LogFollower } from '../../src/log-follower.js';
import { RunFiles } from '../../src/paths.js';
import { exitCodeOf, isTerminal } from '../../src/run/model.js';
import type { RunRef } from '../../src/service/index.js';
import type { Context } from '../context.js';
import { followOutput } from '../context.js';
import { ProgressLine } from '../progress.js';
import { styleFor, summaryLine } from '../render.js';
import { showsProgress } from '../style.js';

interface LogsOptions {
  follow?: boolean;
  stdout?: boolean;
  stderr?: boolean;
}

/** `qwex logs`: what was written so far; with -f, follows to the end like `qwex attach` without the summary line. */
export default async function logs(ctx: Context, prefix: string, options: LogsOptions): Promise<number> {
  const ref = ctx.resolve(prefix);
  const both = !options.stdout && !options.stderr;
  const output = followOutput();
  const nothing = async (): Promise<void> => {};
  const shown = { ...output, onStdout: both || options.stdout ? output.onStdout : nothing, onStderr: both || options.stderr ? output.onStderr : nothing };
  if (options.follow) return follow(ctx, ref, shown, false);
  ctx.store.read(ref.dir); // a clear error when the record is missing or torn
  const { synchronous } = output;
  if (both || options.stdout) await new LogFollower(join(ref.dir, RunFiles.stdout), { onData: shown.onStdout, synchronous }).finish();
  if (both || options.stderr) await new LogFollower(join(ref.dir, RunFiles.stderr), { onData: shown.onStderr, synchronous }).finish();
  return 0;
}

/**
 * Replays and follows a run until it ends; Ctrl-C detaches and leaves it
 * running. Exits with the run's exit code, or 130 when detached.
 */
export async function follow(
  ctx: Context,
  ref: RunRef,
  output: { onStdout: (chunk: Buffer) => Promise<void>; onStderr: (chunk: Buffer) => Promise<void>; synchronous: boolean },
  summary: boolean,
): Promise<number> {
  const detach = new AbortController();
  const onInterrupt = (): void => detach.abort();
  process.on('SIGINT', onInterrupt);
  // `qwex attach` shows what the run's supervisor reports while the run is pending or ending (a sync, a pull...).
  const progress = summary && showsProgress({}) ? new ProgressLine() : undefined;
  progress?.follow(() => ref.dir);
  try {
    const run = await (await ctx.service()).follow(ref, {
      ...output,
      onStdout: progress ? progress.guard(output.onStdout) : output.onStdout,
      onStderr: progress ? progress.guard(output.onStderr) : output.onStderr,
      signal: detach.signal,
    });
    progress?.close();
    if (detach.signal.aborted && !isTerminal(run.status)) {
      if (summary) process.stderr.write(`detached; run ${run.id} is still ${run.status}\n`);
      return 130;
    }
    if (summary) process.stderr.write(`${summaryLine(styleFor(process.stderr), run)}\n`);
    return exitCodeOf(run);
  } finally {
    process.off('SIGINT', onInterrupt);
    progress?.close();
  }
}
