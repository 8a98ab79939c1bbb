import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, QwexError, errnoCode, isReadFailure } from '../errors.js';
import { writeJsonAtomic } from '../fs-atomic.js';
import { isIdPrefix, isRunId } from '../ids.js';
import { QWEX_DIR, runDir } from '../paths.js';
import { readRunRecord } from '../store/run-record.js';
import { listRunDirs, type RunStore } from '../store/run-store.js';
import type { Run } from '../run/model.js';
import type { WorkflowRecord } from './types.js';

/** Where a project's workflows live: `.qwex/workflows/<id>/workflow.json`. */
export function workflowsDir(project: string): string {
  return join(project, QWEX_DIR, 'workflows');
}

export function workflowDir(project: string, id: string): string {
  return join(workflowsDir(project), id);
}

const RECORD = 'workflow.json';

export function readWorkflow(dir: string): WorkflowRecord {
  const path = join(dir, RECORD);
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') throw new QwexError(ErrorCode.NotFound, `no workflow record at ${path}`);
    throw new QwexError(ErrorCode.RecordInvalid, `cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  const record = value as Partial<WorkflowRecord>;
  if (record.version !== 1 || typeof record.id !== 'string' || !Array.isArray(record.stages) || typeof record.runs !== 'object' || record.runs === null) {
    throw new QwexError(ErrorCode.RecordInvalid, `${path} is not a workflow record qwex can read`, { hint: 'it was written by another tool or edited by hand' });
  }
  return record as WorkflowRecord;
}

/**
 * The workflow's record; undefined when there is none, or none qwex can parse. One that exists but cannot be read
 * now (EMFILE, EIO, EACCES) is thrown: a caller must not act on "no workflow" then.
 */
export function readWorkflowIfAny(dir: string): WorkflowRecord | undefined {
  try {
    return readWorkflow(dir);
  } catch (error) {
    if (error instanceof QwexError && !isReadFailure(error)) return undefined;
    throw error;
  }
}

/** Writes workflow.json atomically and durably (it is written once per change of the workflow, never per event). */
export function writeWorkflow(dir: string, record: WorkflowRecord): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeJsonAtomic(join(dir, RECORD), record, 'full');
}

/** Ids of a project's workflows, oldest first (UUIDv7 ids sort by time). */
export function listWorkflowIds(project: string): string[] {
  try {
    return readdirSync(workflowsDir(project)).filter(isRunId).sort();
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return [];
    throw error;
  }
}

/** Finds a workflow by id or unique prefix among the projects given (the first project that has any match wins). */
export function resolveWorkflow(prefix: string, projects: readonly string[]): { id: string; project: string; dir: string } {
  const wanted = prefix.toLowerCase();
  if (!isIdPrefix(wanted)) {
    throw new QwexError(ErrorCode.Usage, `"${prefix}" is not a workflow id or id prefix`, { hint: '`qwex workflow ps` lists this project\'s workflows' });
  }
  for (const project of projects) {
    const matches = listWorkflowIds(project).filter((id) => id.startsWith(wanted));
    if (matches.length === 1) return { id: matches[0]!, project, dir: workflowDir(project, matches[0]!) };
    if (matches.length > 1) {
      throw new QwexError(ErrorCode.RunAmbiguous, `"${prefix}" matches ${matches.length} workflows: ${matches.slice(0, 10).join(', ')}`, { hint: 'type more of the id' });
    }
  }
  throw new QwexError(ErrorCode.NotFound, `no workflow matches "${prefix}"`, { hint: '`qwex workflow ps` lists this project\'s workflows' });
}

/**
 * The newest run of each stage of a workflow, from the runs themselves (the
 * record's `runs` may lag behind a crash): among the project's runs created
 * after the workflow (ids are time-ordered).
 */
export function newestStageRuns(record: Pick<WorkflowRecord, 'id' | 'project'>): Record<string, string> {
  const newest: Record<string, string> = {};
  for (const id of listRunDirs(record.project)) {
    if (id <= record.id) continue;
    try {
      const link = readRunRecord(runDir(record.project, id)).job.workflow;
      if (link?.id === record.id) newest[link.stage] = id; // ids ascend: the last one seen is the newest
    } catch (error) {
      // A run directory without a record (or with one no qwex can parse) is no stage run. One that cannot be read
      // now may be: thrown, rather than have its stage run created again.
      if (isReadFailure(error)) throw error;
    }
  }
  return newest;
}

/** A run's record and directory by id: in `project`, else wherever the index says (a run of another project); undefined when it is not there or not a record. */
export function findRun(store: RunStore, id: string, project: string): { run: Run; dir: string } | undefined {
  const read = (dir: string): { run: Run; dir: string } | undefined => {
    try {
      return { run: store.read(dir), dir };
    } catch (error) {
      // Not there, or not a record qwex can parse: nothing can be said of it. One that cannot be read now is thrown,
      // rather than have a run that depends on it cancelled for a missing record.
      if (isReadFailure(error)) throw error;
      return undefined;
    }
  };
  const here = read(runDir(project, id));
  if (here) return here;
  const row = store.runIndex().get(id);
  return row ? read(row.runDir) : undefined;
}
