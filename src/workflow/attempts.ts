import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, isReadFailure } from '../errors.js';
import { writeJsonAtomic } from '../fs-atomic.js';
import { runDir } from '../paths.js';
import type { Job, Run } from '../run/model.js';
import { listRunDirs } from '../store/run-store.js';
import { readRunRecord } from '../store/run-record.js';
import { attemptNumber, backoffBefore } from './retry.js';

/**
 * Retry attempts: each a run of its own, linked to the first
 * (`job.attempt.of`) and numbered. Creating one is idempotent across a
 * kill -9: the attempt's own record says which failure it follows, and
 * `next-attempt.json` in the failed run's directory, written once it
 * exists, saves the search next time. A crash between the two is found by
 * looking for the attempt among the runs created after the failed one.
 */
const NEXT_ATTEMPT = 'next-attempt.json';

/** The id of the attempt that followed this (failed) run, once it was created and marked. */
export function readNextAttempt(dir: string): string | undefined {
  try {
    const value = JSON.parse(readFileSync(join(dir, NEXT_ATTEMPT), 'utf8')) as { id?: unknown };
    return typeof value.id === 'string' ? value.id : undefined;
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    return undefined; // torn by a crash mid-write: searched for again
  }
}

export function writeNextAttempt(dir: string, id: string): void {
  writeJsonAtomic(join(dir, NEXT_ATTEMPT), { id }, 'file');
}

/** The attempt that follows `run`, if one was created: among the project's runs newer than it. */
export function findNextAttempt(run: Run): { id: string; dir: string } | undefined {
  const first = run.job.attempt?.of ?? run.id;
  const number = attemptNumber(run) + 1;
  for (const id of listRunDirs(run.project)) {
    if (id <= run.id) continue;
    const dir = runDir(run.project, id);
    try {
      const attempt = readRunRecord(dir).job.attempt;
      if (attempt?.of === first && attempt.number === number) return { id, dir };
    } catch (error) {
      // A run directory whose record is not (yet) there is no attempt. One that cannot be read now may be: thrown,
      // rather than have the attempt created twice.
      if (isReadFailure(error)) throw error;
    }
  }
  return undefined;
}

/** The job of the attempt after `run`: the same job, numbered, not started before its backoff has passed. */
export function nextAttemptJob(run: Run, now = Date.now()): Job {
  const number = attemptNumber(run) + 1;
  const delay = backoffBefore(run, number);
  const ended = run.finishedAt ? Date.parse(run.finishedAt) : now;
  return {
    ...run.job,
    attempt: { of: run.job.attempt?.of ?? run.id, number, ...(delay > 0 ? { notBefore: new Date(ended + delay).toISOString() } : {}) },
  };
}
