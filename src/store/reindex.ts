import { existsSync } from 'node:fs';
import { runDir as runDirOf } from '../paths.js';
import type { Run } from '../run/model.js';
import { listRunDirs, type RunStore } from './run-store.js';
import { readRunRecord } from './run-record.js';

export interface ReindexReport {
  projects: string[];
  runs: number;
  /** Run directories whose run.json could not be read; they are left untouched on disk. */
  invalid: { dir: string; message: string }[];
}

/**
 * Rebuilds the index rows of `projects` from their run directories: rows of
 * runs whose directory is gone are dropped, runs copied in from elsewhere
 * are added. run.json files are only read.
 */
export function reindex(store: RunStore, projects: readonly string[]): ReindexReport {
  const report: ReindexReport = { projects: [...projects], runs: 0, invalid: [] };
  const found: { run: Run; runDir: string }[] = [];
  for (const project of projects) {
    if (!existsSync(project)) continue;
    for (const id of listRunDirs(project)) {
      const dir = runDirOf(project, id);
      try {
        const run = readRunRecord(dir);
        // A project moved or copied elsewhere: its runs belong to where they are now.
        found.push({ run: run.project === project ? run : { ...run, project }, runDir: dir });
      } catch (error) {
        report.invalid.push({ dir, message: (error as Error).message });
      }
    }
  }
  store.runIndex().replaceProjects(projects, found);
  report.runs = found.length;
  return report;
}
