import { resolve } from 'node:path';
import { BACKENDS } from '../../src/backends/registry.js';
import type { OrphanReport } from '../../src/backends/types.js';
import { loadConfig, type QwexConfig } from '../../src/config/config.js';
import { ErrorCode, exitStatusFor } from '../../src/errors.js';
import { indexPath, runDir, stateDir } from '../../src/paths.js';
import { isTerminal } from '../../src/run/model.js';
import { reindex, type ReindexReport } from '../../src/store/reindex.js';
import { listRunDirs } from '../../src/store/run-store.js';
import type { Context } from '../context.js';

interface DoctorOptions {
  reindex?: boolean;
  removeOrphans?: boolean;
  json?: boolean;
}

interface BackendReport {
  backend: string;
  where: string;
  reachable: boolean;
  error?: string;
  orphans: { id: string; what: string; runId: string; reason: string; removed?: boolean }[];
}

interface DoctorReport {
  stateDir: string;
  index: string;
  project: string;
  indexOk: boolean;
  indexError?: string;
  reindex?: ReindexReport;
  /** This project's run records that cannot be read (torn, edited by hand). */
  unreadable: { dir: string; message: string }[];
  /** Leftovers of runs on each backend that has something to check (an engine, the clusters this project uses). */
  backends: BackendReport[];
  /** What each backend says of its set-up here (the run helper the local backend uses...). */
  setup: { backend: string; label: string; value: string }[];
}

/**
 * Checks qwex's state: the index (rebuilt with --reindex, even when it is
 * broken), this project's records, and each backend's leftovers. Exits 0
 * when all is well, with QWEX_INDEX_ERROR's status when the index is
 * broken, and QWEX_DOCTOR_FINDINGS's when records cannot be read.
 */
export default async function doctor(ctx: Context, projects: string[], options: DoctorOptions): Promise<number> {
  const report: DoctorReport = { stateDir: stateDir(), index: indexPath(), project: ctx.project, indexOk: true, unreadable: [], backends: [], setup: [] };
  report.setup = BACKENDS.flatMap((b) => (b.health?.() ?? []).map((h) => ({ backend: b.name, ...h })));
  let code = 0;
  try {
    if (options.reindex) {
      const known = ((): string[] => {
        try {
          return ctx.store.runIndex().projects();
        } catch {
          return []; // broken: reindex moves it aside; the projects named (and this one) are rebuilt
        }
      })();
      const targets = projects.length > 0 ? projects.map((p) => resolve(p)) : unique([ctx.project, ...known]);
      report.reindex = reindex(ctx.store, targets);
      report.unreadable = report.reindex.invalid.filter((bad) => bad.dir.startsWith(ctx.project));
    } else {
      ctx.store.runIndex().list({ limit: 1 });
      report.unreadable = unreadableRecords(ctx);
    }
  } catch (error) {
    report.indexOk = false;
    report.indexError = (error as Error).message;
    code = exitStatusFor(ErrorCode.IndexError);
  }
  if (code === 0 && report.unreadable.length > 0) code = exitStatusFor(ErrorCode.DoctorFindings);
  report.backends = await checkBackends(ctx, options.removeOrphans === true);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return code;
  }
  const lines = [`state directory  ${report.stateDir}`, `run index        ${report.index} (${report.indexOk ? 'ok' : `error: ${report.indexError}`})`, `project          ${report.project}`];
  for (const s of report.setup) lines.push(`${`${s.backend} ${s.label}`.padEnd(16)} ${s.value}`);
  if (report.reindex) {
    lines.push(`reindexed        ${report.reindex.runs} run(s) in ${report.reindex.projects.length} project(s)`);
    if (report.reindex.movedAside) lines.push(`broken index     moved to ${report.reindex.movedAside}`);
  }
  for (const bad of report.unreadable) lines.push(`unreadable       ${bad.dir}: ${bad.message}`);
  for (const b of report.backends) {
    lines.push(`${b.backend.padEnd(16)} ${b.where} (${b.reachable ? 'answers' : `not reachable: ${b.error}`})`);
    for (const o of b.orphans) lines.push(`orphan           ${o.what}: ${o.reason}${o.removed ? ' - removed' : ''}`);
  }
  const orphans = report.backends.reduce((n, b) => n + b.orphans.length, 0);
  if (orphans > 0 && !options.removeOrphans) lines.push('                 remove them with: qwex doctor --remove-orphans');
  process.stdout.write(`${lines.join('\n')}\n`);
  return code;
}

/** Reads every record of this project (cheap: small files) and returns those that cannot be read. */
function unreadableRecords(ctx: Context): { dir: string; message: string }[] {
  const bad: { dir: string; message: string }[] = [];
  for (const id of listRunDirs(ctx.project)) {
    const dir = runDir(ctx.project, id);
    try {
      ctx.store.read(dir);
    } catch (error) {
      bad.push({ dir, message: (error as Error).message });
    }
  }
  return bad;
}

/** Asks every backend that can for its leftovers no active run accounts for (and removes them if asked). */
async function checkBackends(ctx: Context, remove: boolean): Promise<BackendReport[]> {
  let config: QwexConfig | undefined;
  try {
    ({ config } = await loadConfig(ctx.project));
  } catch {
    config = undefined; // a broken configuration is reported by the commands that use it; doctor still checks the rest
  }
  const isActive = (dir: string): boolean | undefined => {
    try {
      return !isTerminal(ctx.store.read(dir).status);
    } catch {
      return undefined; // unknown: the unreadable record is listed above; its leftovers are not judged
    }
  };
  const recorded = (names: readonly string[]): Record<string, unknown>[] => {
    try {
      return ctx.store
        .runIndex()
        .list({ project: ctx.project })
        .filter((row) => names.includes(row.backend))
        .flatMap((row) => {
          try {
            return [ctx.store.read(row.runDir).backend];
          } catch {
            return []; // an unreadable record is listed above, with its reason
          }
        });
    } catch {
      return []; // a broken index is reported above (indexOk)
    }
  };
  const reports: BackendReport[] = [];
  for (const backend of BACKENDS) {
    if (!backend.findOrphans) continue;
    const found: OrphanReport[] | undefined = await backend.findOrphans({ config, recorded, isActive, runDir });
    for (const r of found ?? []) {
      const out: BackendReport = { backend: r.backend, where: r.where, reachable: r.reachable, ...(r.error ? { error: r.error } : {}), orphans: [] };
      for (const o of r.orphans) {
        let removed: boolean | undefined;
        if (remove) removed = await o.remove().then(() => true, () => false);
        out.orphans.push({ id: o.id, what: o.what, runId: o.runId, reason: o.reason, ...(removed === undefined ? {} : { removed }) });
      }
      reports.push(out);
    }
  }
  return reports;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
