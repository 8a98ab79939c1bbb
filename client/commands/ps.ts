import type { Context } from '../context.js';
import { parseCount, parseStatuses } from '../parse.js';
import { psTable, styleFor } from '../render.js';

interface PsOptions {
  all?: boolean;
  last: string;
  status?: string;
  job?: string;
  json?: boolean;
}

export default async function ps(ctx: Context, options: PsOptions): Promise<number> {
  const limit = parseCount(options.last, '--last');
  const statuses = options.status === undefined ? undefined : parseStatuses(options.status);
  const query = { ...(options.all ? {} : { project: ctx.project }), ...(statuses ? { statuses } : {}), ...(options.job ? { recipe: options.job } : {}), limit };
  const shown = await (await ctx.service()).list(query);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
    return 0;
  }
  if (shown.length === 0) {
    process.stderr.write(options.all ? 'no runs yet\n' : `no runs in ${ctx.project} yet (qwex ps --all lists every project)\n`);
    return 0;
  }
  process.stdout.write(`${psTable(shown, styleFor(process.stdout), { showProject: options.all === true })}\n`);
  return 0;
}
