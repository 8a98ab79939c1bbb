import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { writeJsonAtomic, writeJsonAtomicGrouped, type Durability } from '../fs-atomic.js';
import { RunFiles } from '../paths.js';
import { RUN_STATUSES, type Run } from '../run/model.js';
import { isRunId } from '../ids.js';

/** Reads and checks `run.json`. A missing or unreadable record is a QwexError, never a partial Run. */
export function readRunRecord(dir: string): Run {
  const path = join(dir, RunFiles.record);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') {
      throw new QwexError(ErrorCode.RunNotFound, `no run record at ${path}`, { cause: error });
    }
    throw new QwexError(ErrorCode.RecordInvalid, `cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new QwexError(ErrorCode.RecordInvalid, `${path} is not valid JSON`, { cause: error });
  }
  return checkRun(value, path);
}

function checkRun(value: unknown, path: string): Run {
  const bad = (what: string): never => {
    throw new QwexError(ErrorCode.RecordInvalid, `${path}: ${what}`, {
      hint: 'the record was written by another tool or edited by hand',
    });
  };
  if (typeof value !== 'object' || value === null) return bad('expected an object');
  const run = value as Partial<Run>;
  if (run.version !== 1) return bad(`unsupported record version ${JSON.stringify(run.version)}`);
  if (typeof run.id !== 'string' || !isRunId(run.id)) return bad('missing or malformed id');
  if (typeof run.status !== 'string' || !RUN_STATUSES.includes(run.status)) return bad(`unknown status ${JSON.stringify(run.status)}`);
  if (typeof run.job !== 'object' || run.job === null || !Array.isArray(run.job.command)) return bad('missing job');
  if (typeof run.project !== 'string') return bad('missing project');
  if (typeof run.backend !== 'object' || run.backend === null) return bad('missing backend');
  return run as Run;
}

export function writeRunRecord(dir: string, run: Run, durability: Durability = 'full'): void {
  writeJsonAtomic(join(dir, RunFiles.record), run, durability);
}

/** As writeRunRecord, flushed by the group (see writeFileAtomicGrouped). */
export function writeRunRecordGrouped(dir: string, run: Run, durability: Durability = 'full'): Promise<void> {
  return writeJsonAtomicGrouped(join(dir, RunFiles.record), run, durability);
}
