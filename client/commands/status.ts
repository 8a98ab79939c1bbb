import type { Context } from '../context.js';
import { publicRun, statusText, styleFor } from '../render.js';

export default async function status(ctx: Context, prefix: string, options: { json?: boolean }): Promise<number> {
  const { dir } = ctx.resolve(prefix);
  const run = ctx.runner.reconcile(dir);
  process.stdout.write(options.json ? `${JSON.stringify(publicRun(run), null, 2)}\n` : `${statusText(run, styleFor(process.stdout), dir)}\n`);
  return 0;
}
