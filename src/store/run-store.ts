import { existsSync, linkSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { isIdPrefix, isRunId } from '../ids.js';
import { RunFiles, indexPath, runDir as runDirOf, runsDir } from '../paths.js';
import type { Run } from '../run/model.js';
import { RunIndex } from './run-index.js';
import { readRunRecord, writeRunRecord, writeRunRecordGrouped } from './run-record.js';
import { flushWritten, writeFileAtomic, type Durability } from '../fs-atomic.js';

export interface ResolvedRun {
  id: string;
  dir: string;
}

export interface RunStoreOptions {
  indexFile?: string;
  /**
   * Group commit, for a long-lived supervisor of many runs (qwexd): records
   * created by createMany are flushed together by flushCreated() (which the
   * caller awaits before it acknowledges them), and saveGrouped flushes on
   * the thread pool, overlapping with other runs' flushes. Without it every
   * write flushes at once, synchronously, through save().
   */
  groupCommit?: boolean;
}

/**
 * Run directories plus the per-user index. run.json is written first and is
 * the record; the index follows it and is only a cache. The index is opened
 * on first use; whoever creates a RunStore closes it.
 */
export class RunStore {
  private index: RunIndex | undefined;
  private readonly indexFile: string;
  private readonly groupCommit: boolean;
  /** Files (and directories) createMany wrote without flushing them, in group-commit mode. */
  private unflushed: { files: (string | string[])[]; dirs: string[] } = { files: [], dirs: [] };

  constructor(options: RunStoreOptions = {}) {
    this.indexFile = options.indexFile ?? indexPath();
    this.groupCommit = options.groupCommit === true;
  }

  /** The index, opened on first use. Throws QwexError if it cannot be opened. */
  runIndex(): RunIndex {
    this.index ??= RunIndex.open(this.indexFile);
    return this.index;
  }

  /**
   * Opens the index; when it cannot be opened because it is broken (corrupt,
   * truncated), moves it (and its WAL files) aside and starts a new one, to
   * be rebuilt by reindex. Returns where the broken one went, if it did.
   */
  openOrReplaceIndex(): string | undefined {
    try {
      this.runIndex();
      return undefined;
    } catch (error) {
      if (!(error instanceof QwexError) || error.code !== ErrorCode.IndexError) throw error;
    }
    const aside = `${this.indexFile}.broken-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    renameSync(this.indexFile, aside);
    for (const suffix of ['-wal', '-shm']) {
      if (existsSync(`${this.indexFile}${suffix}`)) renameSync(`${this.indexFile}${suffix}`, `${aside}${suffix}`);
    }
    this.runIndex();
    return aside;
  }

  /**
   * Creates run directories (0700) and first records, then indexes them all
   * in one transaction (a batch of a thousand runs costs one index write).
   * All or nothing: when one cannot be created (a full disk), those this call
   * created are removed again before the error is thrown. A run whose record
   * is already there (a retried submission) is kept as it is, and returned as
   * it is now. An index failure is thrown after every record is on disk.
   * In group-commit mode the new files are written into place unflushed and
   * flushCreated() makes them durable (one wait for the batch): until it
   * settles, nobody may be told of them.
   */
  createMany(runs: readonly Run[], extra: { name: string; content: string }[] = []): { run: Run; runDir: string }[] {
    const created: { run: Run; runDir: string }[] = [];
    const made: string[] = [];
    const deferred = this.groupCommit;
    const files: (string | string[])[] = [];
    const dirs: string[] = [];
    // The extra files are the same for every run of the batch: written once, then hard-linked into each run's
    // directory, and flushed once, through whichever link is still there then (a run that started removed its own).
    const copies = new Map<string, string[]>();
    for (const run of runs) {
      const dir = runDirOf(run.project, run.id);
      try {
        if (created.length === 0 || created[created.length - 1]!.run.project !== run.project) mkdirSync(runsDir(run.project), { recursive: true });
        if (makeDir(dir)) {
          made.push(dir);
        } else {
          const existing = this.existingRecord(dir);
          if (existing) {
            created.push({ run: existing, runDir: dir });
            continue;
          }
        }
        // Extra files first: the record's directory flush makes their entries durable too.
        for (const file of extra) {
          const path = join(dir, file.name);
          const links = copies.get(file.name);
          if (links !== undefined && linked(links[0]!, path)) {
            links.push(path);
            continue;
          }
          writeFileAtomic(path, file.content, 0o600, deferred ? 'none' : 'file');
          copies.set(file.name, [path]);
          if (deferred) files.push(copies.get(file.name)!);
        }
        writeRunRecord(dir, run, deferred ? 'none' : 'full');
        if (deferred) {
          files.push(join(dir, RunFiles.record));
          dirs.push(dir, runsDir(run.project));
        }
      } catch (error) {
        for (const partial of made) rmSync(partial, { recursive: true, force: true });
        throw new QwexError(ErrorCode.StateUnwritable, `cannot create the run directory ${dir}: ${(error as Error).message}`, {
          hint: errnoCode(error) === 'ENOSPC' ? 'free some disk space; nothing of this submission was kept' : `check that ${join(run.project, '.qwex')} is writable`,
          cause: error,
        });
      }
      created.push({ run, runDir: dir });
    }
    this.unflushed.files.push(...files);
    this.unflushed.dirs.push(...dirs);
    this.runIndex().upsertMany(created);
    return created;
  }

  /**
   * Makes what createMany wrote so far durable, all at once (group-commit
   * mode; settles at once otherwise, as createMany flushed already).
   */
  async flushCreated(): Promise<void> {
    const { files, dirs } = this.unflushed;
    if (files.length === 0 && dirs.length === 0) return;
    this.unflushed = { files: [], dirs: [] };
    try {
      await flushWritten(files, dirs);
    } catch (error) {
      throw new QwexError(ErrorCode.StateUnwritable, `cannot make new run records durable: ${(error as Error).message}`, { cause: error });
    }
  }

  /** The record in `dir` when a complete one is there (a submission retried after a lost answer). */
  private existingRecord(dir: string): Run | undefined {
    if (!existsSync(join(dir, 'run.json'))) return undefined;
    try {
      return readRunRecord(dir);
    } catch {
      return undefined; // torn by a crash mid-write: written again
    }
  }

  /**
   * Writes run.json atomically, then the index. An index failure is thrown
   * after the record is safe. `none` durability is for intermediate states
   * (a power loss may roll them back; reconcile copes).
   */
  save(run: Run, dir: string, durability: Durability = 'full'): void {
    writeRunRecord(dir, run, durability);
    this.indexRun(run, dir);
  }

  /**
   * As save; in group-commit mode its flushes run on the thread pool and
   * overlap with other runs' (the event loop goes on meanwhile), and the new
   * record is visible once durable. For the run's one writer (its
   * supervisor), which must not write the record again before this settles.
   */
  async saveGrouped(run: Run, dir: string, durability: Durability = 'full'): Promise<void> {
    if (!this.groupCommit) return this.save(run, dir, durability);
    await writeRunRecordGrouped(dir, run, durability);
    this.indexRun(run, dir);
  }

  read(dir: string): Run {
    return readRunRecord(dir);
  }

  private indexRun(run: Run, dir: string): void {
    this.runIndex().upsert(run, dir);
  }

  /**
   * Finds a run by id or unique id prefix: first in the index (every
   * project), then, if the index knows none, among the project's run
   * directories (runs copied in from elsewhere and not yet indexed).
   */
  resolve(prefix: string, project?: string): ResolvedRun {
    const wanted = prefix.toLowerCase();
    if (!isIdPrefix(wanted)) {
      throw new QwexError(ErrorCode.Usage, `"${prefix}" is not a run id or id prefix`, {
        hint: 'run ids look like 019aa011-7c2e-7...; `qwex ps` lists them',
      });
    }
    let candidates: ResolvedRun[] = [];
    let indexError: QwexError | undefined;
    try {
      candidates = this.runIndex()
        .idsWithPrefix(wanted, 11)
        .filter((row) => existsSync(join(row.runDir, 'run.json')))
        .map((row) => ({ id: row.id, dir: row.runDir }));
    } catch (error) {
      if (!(error instanceof QwexError)) throw error;
      indexError = error;
    }
    if (candidates.length === 0 && project !== undefined) {
      candidates = listRunDirs(project)
        .filter((id) => id.startsWith(wanted))
        .map((id) => ({ id, dir: runDirOf(project, id) }));
    }
    if (candidates.length === 1) return candidates[0]!;
    if (candidates.length === 0) {
      throw new QwexError(ErrorCode.RunNotFound, `no run matches "${prefix}"`, {
        hint: indexError
          ? `the run index could not be read (${indexError.message}); run \`qwex doctor --reindex\``
          : '`qwex ps` lists this project\'s runs, `qwex ps --all` every project\'s',
      });
    }
    const shown = candidates.slice(0, 10).map((c) => c.id);
    throw new QwexError(ErrorCode.RunAmbiguous, `"${prefix}" matches ${candidates.length > 10 ? 'more than 10' : candidates.length} runs: ${shown.join(', ')}`, {
      hint: 'type more of the id',
      details: { candidates: shown },
    });
  }

  close(): void {
    this.index?.close();
    this.index = undefined;
  }
}

/** Creates a run's directory (0700); false when it exists already (a retried submission). */
function makeDir(dir: string): boolean {
  try {
    mkdirSync(dir, { mode: 0o700 });
    return true;
  } catch (error) {
    if (errnoCode(error) === 'EEXIST') return false;
    throw error;
  }
}

/** Hard-links `from` at `to`; false when it cannot (`to` exists, another filesystem): then it is written instead. */
function linked(from: string, to: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch {
    return false;
  }
}

/** Ids of the run directories of a project, sorted (chronological, as ids are UUIDv7). */
export function listRunDirs(project: string): string[] {
  let names: string[];
  try {
    names = readdirSync(runsDir(project));
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return [];
    throw error;
  }
  return names.filter(isRunId).sort();
}
