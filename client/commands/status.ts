import type { Context } from '../context.js';
import { publicRun, statusText, styleFor } from '../render.js';

export default async function status(ctx: Context, prefix: string, options: { json?: boolean }): Promise<number> {
  const ref = ctx.resolve(prefix);
  const view = await (await ctx.service()).get(ref);
  const { deliveriesOf } = await import('../../src/notify/deliveries.js');
  const deliveries = await deliveriesOf(view.run.id);
  process.stdout.write(
    options.json
      ? `${JSON.stringify({ ...publicRun(view.run), ...(deliveries.length > 0 ? { notifications: deliveries } : {}) }, null, 2)}\n`
      : `${statusText(view, styleFor(process.stdout), deliveries)}\n`,
  );
  return 0;
}
