import { mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { writeJsonAtomic } from '../fs-atomic.js';
import { newRunId } from '../new-run-id.js';
import { runDir as runDirOf, stateDir } from '../paths.js';
import type { RunStore } from '../store/run-store.js';
import type { Run } from './model.js';

/** How long a submission's ids are remembered for retries. */
const KEEP_MS = 24 * 60 * 60 * 1000;

interface Entry {
  project: string;
  ids: string[];
  complete: boolean;
  at: string;
}

/**
 * Makes batch submissions idempotent: a submission's run ids are chosen and
 * written down before any run is created, so the same submission sent
 * again (its answer lost with the connection, or the supervisor killed
 * half-way through the batch) gets exactly the same runs, and a batch cut
 * short is completed rather than duplicated. One small file per submission
 * in the state directory, kept for a day.
 */
export class SubmissionJournal {
  constructor(private readonly dir: string = join(stateDir(), 'submissions')) {}

  /** The run ids of this submission: those written down by an earlier attempt, or new ones now written down. */
  begin(id: string, project: string, count: number): string[] {
    const earlier = this.read(id);
    if (earlier) {
      if (earlier.project !== project || earlier.ids.length !== count) {
        throw new QwexError(ErrorCode.Usage, `submission ${id} was already used for ${earlier.ids.length} job(s) of ${earlier.project}`, {
          hint: 'a retry must send the same jobs; a new submission needs a new id',
        });
      }
      return earlier.ids;
    }
    const ids = Array.from({ length: count }, () => newRunId());
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    writeJsonAtomic(this.path(id), { project, ids, complete: false, at: new Date().toISOString() } satisfies Entry, 'full');
    return ids;
  }

  complete(id: string): void {
    const entry = this.read(id);
    if (entry && !entry.complete) writeJsonAtomic(this.path(id), { ...entry, complete: true }, 'none');
  }

  /** Submissions a crash cut short: their runs that were created belong in the queue. Old entries are dropped. */
  incomplete(now = Date.now()): { id: string; project: string; ids: string[] }[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return [];
      throw error;
    }
    const found: { id: string; project: string; ids: string[] }[] = [];
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const id = name.slice(0, -'.json'.length);
      try {
        if (now - statSync(this.path(id)).mtimeMs > KEEP_MS) {
          rmSync(this.path(id), { force: true });
          continue;
        }
      } catch {
        // Removed meanwhile; or an old entry that cannot be removed: left for the next start. qwexd's start (which
        // calls this) must not fail over the journal's housekeeping; reading an entry, below, throws what it meets.
        continue;
      }
      const entry = this.read(id);
      if (entry && !entry.complete) found.push({ id, project: entry.project, ids: entry.ids });
    }
    return found;
  }

  private read(id: string): Entry | undefined {
    let text: string;
    try {
      text = readFileSync(this.path(id), 'utf8');
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return undefined;
      throw error;
    }
    return JSON.parse(text) as Entry;
  }

  private path(id: string): string {
    return join(this.dir, `${id}.json`);
  }
}

/**
 * The runs of batch submissions a crash cut short: those that were created
 * are indexed (a crash mid-batch comes before the batch's index write), for
 * the caller to queue; a retry of the submission creates the rest.
 */
export function completeCutShort(journal: SubmissionJournal, store: RunStore): { submission: string; found: { run: Run; runDir: string }[]; of: number }[] {
  const done: { submission: string; found: { run: Run; runDir: string }[]; of: number }[] = [];
  for (const submission of journal.incomplete()) {
    const found: { run: Run; runDir: string }[] = [];
    for (const id of submission.ids) {
      const dir = runDirOf(submission.project, id);
      try {
        found.push({ run: store.read(dir), runDir: dir });
      } catch {
        // Not created before the crash: a retry of the submission creates it.
      }
    }
    if (found.length === 0) continue;
    store.runIndex().upsertMany(found);
    done.push({ submission: submission.id, found, of: submission.ids.length });
  }
  return done;
}
