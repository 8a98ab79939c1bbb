import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';
import { writeAll, writeFileAtomic } from '../fs-atomic.js';
import { RunFiles } from '../paths.js';
import { isProcessAlive, processStartTime } from '../process/info.js';

/**
 * Who supervises a run. Exactly one live process holds a run's claim, and
 * only the holder changes the run's record (plus whoever cancels a run that
 * nobody ever claimed). The first holder wins an exclusive create; a holder
 * that died is replaced by one successor only: each takeover first wins an
 * exclusive token named after the holder it replaces. A holder is a pid
 * plus its start time, so a recycled pid is never mistaken for it.
 */
export interface ClaimHolder {
  pid: number;
  startTime?: string;
  /** `supervise`: it starts or follows the run. `cancel`: it recorded a run nobody started as cancelled. */
  intent: 'supervise' | 'cancel';
  at: string;
}

export function self(intent: ClaimHolder['intent'], pid = process.pid): ClaimHolder {
  const startTime = pid === process.pid ? ownStartTime() : processStartTime(pid);
  return { pid, ...(startTime === undefined ? {} : { startTime }), intent, at: new Date().toISOString() };
}

// This process's own start time never changes: read once, not for every run it claims.
let own: { startTime: string | undefined } | undefined;
function ownStartTime(): string | undefined {
  own ??= { startTime: processStartTime(process.pid) };
  return own.startTime;
}

/** Takes the run's claim if nobody holds it. True when `holder` now holds it (also when it already did). */
export function claim(dir: string, holder: ClaimHolder): boolean {
  try {
    createExclusive(join(dir, RunFiles.claim), JSON.stringify(holder));
    return true;
  } catch (error) {
    if (errnoCode(error) !== 'EEXIST') throw error;
  }
  const current = readClaim(dir);
  return current !== undefined && sameHolder(current, holder);
}

/**
 * The claim's holder, or undefined when there is none. A claim file that
 * cannot be parsed was torn by a writer that died mid-write (the exclusive
 * create writes in place): it counts as held by nobody alive.
 */
export function readClaim(dir: string): ClaimHolder | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, RunFiles.claim), 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const parsed = JSON.parse(text) as ClaimHolder;
    if (typeof parsed.pid === 'number') return parsed;
  } catch {
    // torn: see above
  }
  return { pid: 0, intent: 'supervise', at: '' };
}

export function isHolderAlive(holder: ClaimHolder): boolean {
  return holder.pid > 0 && isProcessAlive(holder.pid, holder.startTime);
}

/** True when this process holds the run's claim. */
export function holdsClaim(dir: string, pid = process.pid): boolean {
  const holder = readClaim(dir);
  return holder !== undefined && holder.pid === pid && isProcessAlive(pid, holder.startTime);
}

/**
 * Replaces a dead holder by `holder`. False when the holder is alive, or
 * another process won the takeover of that same dead holder. With no claim
 * at all, it is an ordinary claim.
 */
export function takeOver(dir: string, holder: ClaimHolder): boolean {
  const current = readClaim(dir);
  if (current === undefined) return claim(dir, holder);
  if (sameHolder(current, holder)) return true;
  if (isHolderAlive(current)) return false;
  const token = join(dir, `.claim.${current.pid}.${current.startTime ?? 'x'}.${current.at.replace(/[^0-9A-Za-z]/g, '')}.takeover`);
  try {
    createExclusive(token, JSON.stringify(holder));
  } catch (error) {
    if (errnoCode(error) === 'EEXIST') return false;
    throw error;
  }
  try {
    writeFileAtomic(join(dir, RunFiles.claim), JSON.stringify(holder), 0o600, 'file');
  } catch (error) {
    // The takeover did not happen (a full disk): another may try again later.
    rmSync(token, { force: true });
    throw error;
  }
  // The token stays: it is what makes this the only successor of that dead holder.
  return true;
}

/** Creates a file that must not exist yet, with its content; a write that fails (a full disk) leaves no file behind. */
function createExclusive(path: string, content: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeAll(fd, Buffer.from(content));
  } catch (error) {
    closeSync(fd);
    rmSync(path, { force: true });
    throw error;
  }
  closeSync(fd);
}

function sameHolder(a: ClaimHolder, b: ClaimHolder): boolean {
  return a.pid === b.pid && (a.startTime ?? '') === (b.startTime ?? '');
}
