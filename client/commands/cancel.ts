import { loadConfig } from '../../src/config/config.js';
import { isQwexError } from '../../src/errors.js';
import { Method } from '../../src/protocol.js';
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

export default async function cancel(ctx: Context, prefixes: string[], options: CancelOptions): Promise<number> {
  const graceMs = options.grace === undefined ? (await loadConfig(ctx.project)).config.killGraceSeconds * 1000 : parseDuration(options.grace, '--grace');
  const targets = prefixes.map((p) => ctx.resolve(p));
  let code = 0;
  const results: Run[] = [];
  const daemon = await ctx.daemon();
  for (const { id, dir } of targets) {
    try {
      let run = daemon ? (await daemon.request(Method.cancel, { id, graceMs })).run : await ctx.runner.cancel(dir, graceMs);
      if (options.wait && !isTerminal(run.status)) {
        run = await ctx.watcher.waitForEnd(dir, { refresh: (d) => ctx.runner.reconcile(d), checkMs: 200 });
      }
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
