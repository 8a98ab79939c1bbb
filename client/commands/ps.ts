import { Method, type ListedRun } from '../../src/protocol.js';
import { isTerminal } from '../../src/run.js';
import { sampleGroup } from '../../src/usage.js';
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
  const query = { ...(options.all ? {} : { project: ctx.project }), ...(statuses ? { statuses } : {}), limit };
  const daemon = await ctx.daemon();
  const shown = daemon ? (await daemon.request(Method.list, query)).runs : await listDirect(ctx, query);
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

/** Without qwexd: the index, with active rows brought up to date and their resource use sampled. */
async function listDirect(ctx: Context, query: Parameters<ReturnType<Context['store']['runIndex']>['list']>[0]): Promise<ListedRun[]> {
  const rows = ctx.store.runIndex().list(query);
  return Promise.all(
    rows.map(async (row): Promise<ListedRun> => {
      if (isTerminal(row.status)) return row;
      try {
        const run = await ctx.runner.reconcile(row.runDir);
        const sample = run.status === 'running' && typeof run.backend.pgid === 'number' ? await sampleGroup(run.backend.pgid) : undefined;
        return {
          ...row,
          status: run.status,
          startedAt: run.startedAt ?? null,
          finishedAt: run.finishedAt ?? null,
          exitCode: run.exitCode,
          signal: run.signal,
          ...(sample ? { usage: { cpuPercent: sample.cpuPercent, rssBytes: sample.rssBytes, processes: sample.processes } } : {}),
        };
      } catch {
        return row; // the run directory is gone or unreadable; the index row is all there is
      }
    }),
  );
}
