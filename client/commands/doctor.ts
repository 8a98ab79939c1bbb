import { resolve } from 'node:path';
import { indexPath, stateDir } from '../../src/paths.js';
import { reindex, type ReindexReport } from '../../src/reindex.js';
import type { Context } from '../context.js';

interface DoctorOptions {
  reindex?: boolean;
  json?: boolean;
}

interface DoctorReport {
  stateDir: string;
  index: string;
  project: string;
  indexOk: boolean;
  indexError?: string;
  reindex?: ReindexReport;
}

export default async function doctor(ctx: Context, projects: string[], options: DoctorOptions): Promise<number> {
  const report: DoctorReport = { stateDir: stateDir(), index: indexPath(), project: ctx.project, indexOk: true };
  let code = 0;
  try {
    if (options.reindex) {
      const targets = projects.length > 0 ? projects.map((p) => resolve(p)) : unique([ctx.project, ...ctx.store.runIndex().projects()]);
      report.reindex = reindex(ctx.store, targets);
    } else {
      ctx.store.runIndex().list({ limit: 1 });
    }
  } catch (error) {
    report.indexOk = false;
    report.indexError = (error as Error).message;
    code = 8;
  }
  if (options.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return code;
  }
  const lines = [`state directory  ${report.stateDir}`, `run index        ${report.index} (${report.indexOk ? 'ok' : `error: ${report.indexError}`})`, `project          ${report.project}`];
  if (report.reindex) {
    lines.push(`reindexed        ${report.reindex.runs} run(s) in ${report.reindex.projects.length} project(s)`);
    for (const bad of report.reindex.invalid) lines.push(`unreadable       ${bad.dir}: ${bad.message}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  return code;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
