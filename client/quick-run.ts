/**
 * `qwex run` on the quick path (quick.ts): everything it needs up to the
 * request to qwexd, imported statically, so that it loads as one module
 * graph rather than as four lazily loaded ones.
 */
import { BACKENDS } from '../src/backends/registry.js';
import type { BackendFlag } from '../src/backends/types.js';
import run, { type RunOptions } from './commands/run.js';
import { Context } from './context.js';
import { reportError } from './exit.js';

/** Runs `qwex run` as main.ts would (the same module, context and error rendering); returns its exit code. */
export async function runCommand(args: string[], options: RunOptions, argv: readonly string[]): Promise<number> {
  const ctx = new Context();
  try {
    return await run(ctx, args, withBackendDefaults(options, BACKENDS.flatMap((b) => b.flags)));
  } catch (error) {
    return reportError(error, { json: argv.includes('--json') });
  } finally {
    await ctx.close();
  }
}

/**
 * What commander adds for the backends' own flags: `true` for each `--no-X`
 * (a flag whose absence is a value), nothing for the others. They are not
 * known before the backends' registry is loaded, which `qwex run` loads anyway.
 */
export function withBackendDefaults<T extends object>(options: T, flags: readonly BackendFlag[]): T {
  const defaults: Record<string, true> = {};
  for (const flag of flags) if (flag.flags.startsWith('--no-')) defaults[flag.key] = true;
  return { ...defaults, ...options };
}
