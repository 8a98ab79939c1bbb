import { existsSync } from 'node:fs';
import { runDir as runDirOf } from '../paths.js';
import type { Run } from '../run/model.js';
import type { UnreadableRun } from './run-index.js';
import { listRunDirs, type RunStore } from './run-store.js';
import { readRunRecord } from './run-record.js';

export interface ReindexReport {
  projects: string[];
  runs: number;
  /** Run directories whose run.json could not be read: left untouched on disk, and listed as unreadable. */
  invalid: { dir: string; message: string }[];
  /** Where a broken index was moved before it was rebuilt, if it was. */
  movedAside?: string;
}

/**
 * Rebuilds the index rows of `projects` from their run directories: rows of
 * runs whose directory is gone are dropped, runs copied in from elsewhere
 * are added, and records that cannot be read are kept as rows that say so.
 * run.json files are only read. An index that cannot be opened at all
 * (corrupt, truncated) is moved aside first and rebuilt.
 */
export function reindex(store: RunStore, projects: readonly string[]): ReindexReport {
  const report: ReindexReport = { projects: [...projects], runs: 0, invalid: [] };
  const movedAside = store.openOrReplaceIndex();
  if (movedAside !== undefined) report.movedAside = movedAside;
  const index = store.runIndex();
  const found: { run: Run; runDir: string }[] = [];
  const unreadable: UnreadableRun[] = [];
  for (const project of projects) {
    if (!existsSync(project)) continue;
    for (const id of listRunDirs(project)) {
      const dir = runDirOf(project, id);
      try {
        const run = readRunRecord(dir);
        // A project moved or copied elsewhere: its runs belong to where they are now.
        found.push({ run: run.project === project ? run : { ...run, project }, runDir: dir });
      } catch (error) {
        const message = (error as Error).message;
        report.invalid.push({ dir, message });
        const previous = index.get(id);
        unreadable.push({ id, project, runDir: dir, message, ...(previous ? { previous } : {}) });
      }
    }
  }
  index.replaceProjectsWithProblems(projects, found, unreadable);
  report.runs = found.length;
  return report;
}
