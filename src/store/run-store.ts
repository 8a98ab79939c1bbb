import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { isIdPrefix, isRunId } from '../ids.js';
import { indexPath, runDir as runDirOf, runsDir } from '../paths.js';
import type { Run } from '../run/model.js';
import { RunIndex } from './run-index.js';
import { readRunRecord, writeRunRecord } from './run-record.js';
import { writeFileAtomic, type Durability } from '../fs-atomic.js';

export interface ResolvedRun {
  id: string;
  dir: string;
}

/**
 * Run directories plus the per-user index. run.json is written first and is
 * the record; the index follows it and is only a cache. The index is opened
 * on first use; whoever creates a RunStore closes it.
 */
export class RunStore {
  private index: RunIndex | undefined;
  private readonly indexFile: string;

  constructor(options: { indexFile?: string } = {}) {
    this.indexFile = options.indexFile ?? indexPath();
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
   */
  createMany(runs: readonly Run[], extra: { name: string; content: string }[] = []): { run: Run; runDir: string }[] {
    const created: { run: Run; runDir: string }[] = [];
    const made: string[] = [];
    for (const run of runs) {
      const dir = runDirOf(run.project, run.id);
      try {
        if (created.length === 0 || created[created.length - 1]!.run.project !== run.project) mkdirSync(runsDir(run.project), { recursive: true });
        const existing = this.existingRecord(dir);
        if (existing) {
          created.push({ run: existing, runDir: dir });
          continue;
        }
        if (!existsSync(dir)) {
          mkdirSync(dir, { mode: 0o700 });
          made.push(dir);
        }
        // Extra files first: the record's directory flush makes their entries durable too.
        for (const file of extra) writeFileAtomic(join(dir, file.name), file.content, 0o600, 'file');
        writeRunRecord(dir, run, 'full');
      } catch (error) {
        for (const partial of made) rmSync(partial, { recursive: true, force: true });
        throw new QwexError(ErrorCode.StateUnwritable, `cannot create the run directory ${dir}: ${(error as Error).message}`, {
          hint: errnoCode(error) === 'ENOSPC' ? 'free some disk space; nothing of this submission was kept' : `check that ${join(run.project, '.qwex')} is writable`,
          cause: error,
        });
      }
      created.push({ run, runDir: dir });
    }
    this.runIndex().upsertMany(created);
    return created;
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
