import { exitCodeOf } from '../../src/run/model.js';
import type { Context } from '../context.js';
import { publicRun } from '../render.js';

export default async function wait(ctx: Context, prefixes: string[], options: { json?: boolean }): Promise<number> {
  const refs = prefixes.map((p) => ctx.resolve(p));
  const service = await ctx.service();
  const runs = await Promise.all(refs.map((ref) => service.wait(ref)));
  if (options.json) process.stdout.write(`${JSON.stringify(runs.map(publicRun), null, 2)}\n`);
  const firstFailure = runs.find((run) => run.status !== 'succeeded');
  return firstFailure ? exitCodeOf(firstFailure) : 0;
}
