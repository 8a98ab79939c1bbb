import { isTerminal } from '../../src/run.js';
import type { RunSummary } from '../../src/run-index.js';
import type { Context } from '../context.js';
import { parseCount, parseStatuses } from '../parse.js';
import { psTable, styleFor } from '../render.js';

interface PsOptions {
  all?: boolean;
  last: string;
  status?: string;
  json?: boolean;
}

export default async function ps(ctx: Context, options: PsOptions): Promise<number> {
  const limit = parseCount(options.last, '--last');
  const statuses = options.status === undefined ? undefined : parseStatuses(options.status);
  const rows = ctx.store.runIndex().list({
    ...(options.all ? {} : { project: ctx.project }),
    ...(statuses ? { statuses } : {}),
    limit,
  });
  const shown = rows.map((row) => freshen(ctx, row));
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

/** An active row may be stale if its monitor died: bring it up to date (cheap while the monitor lives). */
function freshen(ctx: Context, row: RunSummary): RunSummary {
  if (isTerminal(row.status)) return row;
  try {
    const run = ctx.runner.reconcile(row.runDir);
    return { ...row, status: run.status, startedAt: run.startedAt ?? null, finishedAt: run.finishedAt ?? null, exitCode: run.exitCode, signal: run.signal };
  } catch {
    return row; // the run directory is gone or unreadable; the index row is all there is
  }
}
