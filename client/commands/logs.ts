import { join } from 'node:path';
import { LogFollower } from '../../src/log-follower.js';
import { RunFiles } from '../../src/paths.js';
import { exitCodeOf } from '../../src/run.js';
import type { Context } from '../context.js';
import { writer } from '../context.js';

interface LogsOptions {
  follow?: boolean;
  stdout?: boolean;
  stderr?: boolean;
}

export default async function logs(ctx: Context, prefix: string, options: LogsOptions): Promise<number> {
  const { dir } = ctx.resolve(prefix);
  const both = !options.stdout && !options.stderr;
  const toOut = writer(process.stdout);
  const toErr = writer(process.stderr);
  const none = async (): Promise<void> => {};
  if (options.follow) {
    const detach = new AbortController();
    const onInterrupt = (): void => detach.abort();
    process.on('SIGINT', onInterrupt);
    try {
      const run = await ctx.watcher.follow(dir, {
        onStdout: both || options.stdout ? toOut : none,
        onStderr: both || options.stderr ? toErr : none,
        refresh: (d) => ctx.runner.reconcile(d),
        signal: detach.signal,
      });
      return detach.signal.aborted ? 130 : exitCodeOf(run);
    } finally {
      process.off('SIGINT', onInterrupt);
    }
  }
  ctx.watcher.read(dir); // a clear error when the record is missing or torn
  if (both || options.stdout) await new LogFollower(join(dir, RunFiles.stdout), { onData: toOut }).finish();
  if (both || options.stderr) await new LogFollower(join(dir, RunFiles.stderr), { onData: toErr }).finish();
  return 0;
}
