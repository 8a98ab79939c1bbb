import type { Context } from '../context.js';
import { followOutput } from '../context.js';
import { follow } from './logs.js';

/** `qwex attach`: replay the output so far, stream it live, end with the run's status and exit code. Ctrl-C detaches. */
export default async function attach(ctx: Context, prefix: string): Promise<number> {
  return follow(ctx, ctx.resolve(prefix), followOutput(), true);
}
