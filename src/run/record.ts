import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { rm, rmdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { takeBaseline, type Baseline } from '../workspace/artifacts.js';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { writeJsonAtomic, type Durability } from '../fs-atomic.js';
import { RunFiles } from '../paths.js';
import type { RunStore } from '../store/run-store.js';
import { ContentStore, materializeWorkspace, under, workspaceDir } from '../workspace/snapshot.js';
import type { Run } from './model.js';

/** Structured diagnostics of whoever supervises runs (qwexd's log, a monitor's stderr). */
export type Log = (event: string, fields?: Record<string, unknown>) => void;

/** How long a final record that cannot be written (a full disk) waits before the next try. */
export const FINAL_SAVE_RETRY_MS = 2000;

/**
 * Writes of a run's record by its supervisor. An index failure never fails
 * a write (run.json is the record; the index is a cache): it is logged.
 */
export class RecordWriter {
  constructor(
    readonly store: RunStore,
    readonly log: Log,
  ) {}

  save(run: Run, dir: string, durability: Durability = 'none'): void {
    try {
      this.store.save(run, dir, durability);
    } catch (error) {
      this.indexErrorOnly(error);
    }
  }

  /** As save, with the flush shared with other runs' (RunStore.saveGrouped): the caller awaits it before writing the record again. */
  async saveGrouped(run: Run, dir: string, durability: Durability): Promise<void> {
    try {
      await this.store.saveGrouped(run, dir, durability);
    } catch (error) {
      this.indexErrorOnly(error);
    }
  }

  /** An index failure is logged (the record is written); anything else is thrown. */
  private indexErrorOnly(error: unknown): void {
    if (error instanceof QwexError && error.code === ErrorCode.IndexError) {
      this.log('index-error', { message: error.message });
      return;
    }
    throw error;
  }

  /**
   * The last write of a run, which must not be lost. On a full disk the
   * captured files make way for the record; if it still cannot be written,
   * it is tried again every FINAL_SAVE_RETRY_MS until it can (space freed):
   * the promise settles only once the record is on disk, so whoever waits
   * for the run's end waits for that.
   */
  async saveFinal(run: Run, dir: string, isDisposed: () => boolean = () => false): Promise<Run> {
    let record = run;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.saveGrouped(record, dir, 'full');
        return record;
      } catch (error) {
        const code = errnoCode(error);
        if (code === 'ENOENT' && !existsSync(dir)) throw new QwexError(ErrorCode.StateUnwritable, `the run directory ${dir} is gone`, { cause: error });
        if (code === 'ENOSPC' && existsSync(join(dir, RunFiles.files)) && record.artifacts?.error === undefined) {
          this.log('enospc', { message: 'removing captured files to record the outcome' });
          rmSync(join(dir, RunFiles.files), { recursive: true, force: true });
          record = { ...record, artifacts: { count: 0, bytes: 0, skipped: record.artifacts?.skipped ?? 0, error: 'no space left on device: captured files were removed to record the run' } };
          continue;
        }
        if (attempt === 1) this.log('final-save-failed', { message: (error as Error).message, retryMs: FINAL_SAVE_RETRY_MS });
        if (isDisposed()) throw error;
        await new Promise((resolve) => setTimeout(resolve, FINAL_SAVE_RETRY_MS));
      }
    }
  }
}

/** Where the command runs: its working directory in the project, or the same place in the run's own copy. */
export function execCwd(run: Run, dir: string): string {
  return run.job.workspace ? under(workspaceDir(dir), run.job.workspace.cwd) : run.job.cwd;
}

/** The tree the command runs in: the project, or the run's own copy of its snapshot. */
export function execRoot(run: Run, dir: string): string {
  return run.job.workspace ? workspaceDir(dir) : run.project;
}

/**
 * Makes the run's own copy of its workspace snapshot (snapshot mode, local
 * runs), once. It is made beside its place and renamed into it when
 * complete, so a supervisor taking over a run whose copy is there keeps it
 * (the command may already run in it) and one that died while copying left
 * only the partial copy, which is made again. (A `workspace.ready` marker
 * said the same before 2026-12: the copy is still kept where one is there.)
 */
export function prepareCopy(run: Run, dir: string): void {
  const spec = run.job.workspace;
  const root = workspaceDir(dir);
  if (!spec || existsSync(root)) return;
  const partial = join(dir, RunFiles.workspacePartial);
  if (existsSync(partial)) rmSync(partial, { recursive: true, force: true }); // left by a supervisor that died copying
  const store = new ContentStore();
  materializeWorkspace(store.readManifest(spec.manifest), store, run.project, partial);
  if (spec.cwd !== '') mkdirSync(under(partial, spec.cwd), { recursive: true });
  // Not flushed: the copy's own files are not either (a power loss may tear them whatever its name says); the rename
  // only tells a supervisor taking over after a crash of its predecessor that the copy was finished.
  renameSync(partial, root);
}

/**
 * Removes what only served the running command: its copy of the workspace
 * and the submitter's environment. On the thread pool: a supervisor of many
 * runs goes on meanwhile.
 */
export async function removeRunCopy(dir: string): Promise<void> {
  await Promise.all([removeTree(workspaceDir(dir)), removeFile(join(dir, RunFiles.env))]);
}

// One call each where one does (a command that left its copy empty, files that are there or not): `rm` looks at
// the path twice before it removes anything, which a qwexd ending hundreds of short runs pays for every run.
async function removeTree(path: string): Promise<void> {
  try {
    await rmdir(path);
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT') return;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw error;
    await rm(path, { recursive: true, force: true });
  }
}

async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error;
  }
}

/**
 * The fingerprints of the watched files before the command starts, saved so
 * that whoever finishes the run (maybe another process) captures only what
 * changed. Taken once: a supervisor taking over keeps the first.
 */
export function ensureBaseline(run: Run, dir: string, remote: boolean): void {
  const path = join(dir, RunFiles.baseline);
  if (remote || existsSync(path)) return;
  let baseline: Baseline;
  try {
    baseline = takeBaseline({ cwd: execCwd(run, dir), projectRoot: execRoot(run, dir), settings: run.job.artifacts });
  } catch {
    // Without one, every file under the watched directories counts as new: more is captured, nothing is lost.
    return;
  }
  if (baseline.size === 0) return; // absent means empty
  writeJsonAtomic(path, Object.fromEntries(baseline), 'none');
}

export function readBaseline(dir: string): Baseline {
  let text: string;
  try {
    text = readFileSync(join(dir, RunFiles.baseline), 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return new Map();
    throw error;
  }
  try {
    return new Map(Object.entries(JSON.parse(text) as Record<string, string>));
  } catch {
    // Torn by a crash mid-write ('none' durability): capture everything rather than fail the run.
    return new Map();
  }
}
