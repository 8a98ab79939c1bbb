import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * How much of a write must survive a power loss (a process crash never tears
 * a file, whatever this says: the rename is atomic):
 *   full: the file's content and its directory entry are flushed (fsync both);
 *   file: the content is flushed; a later `full` write in the same directory
 *         flushes the entry;
 *   none: atomic only (intermediate states that are rewritten anyway).
 * QWEX_FSYNC=0 turns every level into `none`, trading power-loss durability
 * for speed.
 */
export type Durability = 'full' | 'file' | 'none';

const fsyncDisabled = process.env.QWEX_FSYNC === '0';

/**
 * Writes a file so that readers see the old content or the new, never a torn
 * mix: write a temporary file beside it, (fsync,) rename over, (fsync the directory).
 * Synchronous on purpose: records are small and callers must not interleave.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600, durability: Durability = 'full'): void {
  const sync = fsyncDisabled ? 'none' : durability;
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd = openSync(tmp, 'wx', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    if (sync !== 'none') fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    fd = -1;
    try {
      unlinkSync(tmp);
    } catch {
      // the temporary file is already gone; the original error matters
    }
    throw error;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (error) {
    try {
      unlinkSync(tmp);
    } catch {
      // as above
    }
    throw error;
  }
  if (sync === 'full') fsyncDir(dirname(path));
}

export function fsyncDir(dir: string): void {
  let fd: number;
  try {
    fd = openSync(dir, 'r');
  } catch {
    return;
  }
  try {
    fsyncSync(fd);
  } catch {
    // some filesystems refuse fsync on a directory; the rename is still atomic
  } finally {
    closeSync(fd);
  }
}

export function writeJsonAtomic(path: string, value: unknown, durability: Durability = 'full'): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, 0o600, durability);
}

/** Writes all of `data` at the descriptor's position (writeSync may write less than asked). */
export function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}
