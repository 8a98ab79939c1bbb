import { isQwexError } from '../../src/errors.js';
import { isTerminal, type Run } from '../../src/run/model.js';
import type { Context } from '../context.js';
import { reportError } from '../exit.js';
import { parseDuration } from '../parse.js';
import { publicRun, styleFor, summaryLine } from '../render.js';

interface CancelOptions {
  grace?: string;
  wait: boolean;
  json?: boolean;
}

/** `qwex cancel`: each run's own grace period unless --grace, the same as Ctrl-C on a foreground run. */
export default async function cancel(ctx: Context, prefixes: string[], options: CancelOptions): Promise<number> {
  const graceMs = options.grace === undefined ? undefined : parseDuration(options.grace, '--grace');
  const refs = prefixes.map((p) => ctx.resolve(p));
  const service = await ctx.service();
  let code = 0;
  const results: Run[] = [];
  for (const ref of refs) {
    try {
      let run = await service.cancel(ref, graceMs === undefined ? {} : { graceMs });
      if (options.wait && !isTerminal(run.status)) run = await service.wait(ref);
      results.push(run);
    } catch (error) {
      if (!isQwexError(error)) throw error;
      code = reportError(error, { json: options.json === true });
    }
  }
  if (options.json) {
    process.stdout.write(`${JSON.stringify(results.map(publicRun), null, 2)}\n`);
  } else {
    const style = styleFor(process.stderr);
    for (const run of results) {
      process.stderr.write(isTerminal(run.status) ? `${summaryLine(style, run)}\n` : `cancel requested for run ${run.id}\n`);
    }
  }
  return code;
}
