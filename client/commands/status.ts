import { Method, type RunView } from '../../src/protocol.js';
import type { Context } from '../context.js';
import { publicRun, statusText, styleFor } from '../render.js';

export default async function status(ctx: Context, prefix: string, options: { json?: boolean }): Promise<number> {
  const { id, dir } = ctx.resolve(prefix);
  const daemon = await ctx.daemon();
  const view: RunView = daemon ? await daemon.request(Method.get, { id }) : { run: await ctx.runner.reconcile(dir), dir };
  process.stdout.write(options.json ? `${JSON.stringify(publicRun(view.run), null, 2)}\n` : `${statusText(view, styleFor(process.stdout))}\n`);
  return 0;
}
