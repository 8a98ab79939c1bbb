import { close, closeSync, fsync, fsyncSync, open, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

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

let tmpCounter = 0;

/**
 * A temporary name beside `path`, unique to this process (pid, a counter) and
 * unlikely to be met again after a crash (a random part); it is created
 * exclusively all the same. Not node:crypto: loading it costs every command's start.
 */
function tmpName(path: string): string {
  const random = Math.floor(Math.random() * 0x100000000).toString(16);
  return join(dirname(path), `.${basename(path)}.${process.pid}.${(tmpCounter++).toString(36)}${random}.tmp`);
}

/**
 * Writes a file so that readers see the old content or the new, never a torn
 * mix: write a temporary file beside it, (fsync,) rename over, (fsync the directory).
 * Synchronous on purpose: records are small and callers must not interleave.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600, durability: Durability = 'full'): void {
  const sync = fsyncDisabled ? 'none' : durability;
  const tmp = tmpName(path);
  let fd = openSync(tmp, 'wx', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    if (sync !== 'none') fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    fd = -1;
    removeQuietly(tmp);
    throw error;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  renameInto(tmp, path);
  if (sync === 'full') fsyncDir(dirname(path));
}

/** Removes a temporary file after a failure: the failure is what matters, not whether the file was still there. */
function removeQuietly(tmp: string): void {
  try {
    unlinkSync(tmp);
  } catch {
    // the temporary file is already gone; the original error matters
  }
}

/** Moves a written temporary file over `path`; a failed move leaves neither it nor a half-written `path`. */
function renameInto(tmp: string, path: string): void {
  try {
    renameSync(tmp, path);
  } catch (error) {
    removeQuietly(tmp);
    throw error;
  }
}

export function fsyncDir(dir: string): void {
  let fd: number;
  try {
    fd = openSync(dir, 'r');
  } catch {
    return; // a directory that cannot be opened cannot be synced: the rename is still atomic, only its durability is the kernel's
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

/**
 * Group commit. Flushes run on libuv's thread pool, so the event loop goes on
 * while the disk works, and flushes asked for together overlap (the
 * filesystem commits them in one journal transaction where it can): a batch
 * of records costs about one flush's wait, not one per record. Each promise
 * settles only once what it covers is durable: nothing is acknowledged before.
 */
function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (error) => (error ? reject(error) : resolve())));
}

/** Flushes a file's content by path (written and renamed into place already). */
function fsyncPath(path: string, flags: 'r' | 'r+' = 'r'): Promise<void> {
  return new Promise((resolve, reject) => {
    open(path, flags, (openError, fd) => {
      if (openError) return reject(openError);
      fsync(fd, (syncError) => close(fd, () => (syncError ? reject(syncError) : resolve())));
    });
  });
}

/** Per directory: the flush in flight, and the one queued behind it that those who ask meanwhile share. */
const dirFlushes = new Map<string, { running: Promise<void>; waiting?: Promise<void> }>();

/**
 * Flushes a directory's entries. Callers that ask while a flush of the same
 * directory is in flight share the next one, which starts when that one
 * ends: it covers every entry made before any of them asked.
 */
export function flushDir(dir: string): Promise<void> {
  if (fsyncDisabled) return Promise.resolve();
  const state = dirFlushes.get(dir);
  if (!state) return startDirFlush(dir);
  state.waiting ??= state.running.then(() => startDirFlush(dir));
  return state.waiting;
}

function startDirFlush(dir: string): Promise<void> {
  const running = fsyncPath(dir).catch(() => {
    // some filesystems refuse fsync on a directory; the rename is still atomic
  });
  dirFlushes.set(dir, { running });
  void running.then(() => {
    const state = dirFlushes.get(dir);
    if (state?.running === running && state.waiting === undefined) dirFlushes.delete(dir);
  });
  return running;
}

/**
 * As writeFileAtomic, with the flushes done by the group (see above): the
 * content is flushed before the rename and the directory after it, as
 * `durability` says. Readers see the new content once it is durable (at the
 * rename). For a file with one writer at a time: a later write to the same
 * path must not start before this one settles.
 */
export async function writeFileAtomicGrouped(path: string, data: string | Uint8Array, mode = 0o600, durability: Durability = 'full'): Promise<void> {
  const sync = fsyncDisabled ? 'none' : durability;
  if (sync === 'none') return writeFileAtomic(path, data, mode, 'none');
  const tmp = tmpName(path);
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data);
    await fsyncFd(fd);
  } catch (error) {
    closeSync(fd);
    removeQuietly(tmp);
    throw error;
  }
  closeSync(fd);
  renameInto(tmp, path);
  if (sync === 'full') await flushDir(dirname(path));
}

export function writeJsonAtomicGrouped(path: string, value: unknown, durability: Durability = 'full'): Promise<void> {
  return writeFileAtomicGrouped(path, `${JSON.stringify(value, null, 2)}\n`, 0o600, durability);
}

/**
 * Flushes files that were written into place without a flush, then their
 * directories, all at once. For new files nobody was told of yet (a batch
 * of records being created): until this settles, a power loss may leave
 * them torn, and they must not be acknowledged. An entry that is a list
 * names the links of one file: its content is flushed once, through the
 * first of them still there.
 */
export async function flushWritten(files: readonly (string | readonly string[])[], dirs: readonly string[]): Promise<void> {
  if (fsyncDisabled) return;
  await Promise.all(files.map((file) => flushFirst(typeof file === 'string' ? [file] : file)));
  await Promise.all([...new Set(dirs)].map((dir) => flushDir(dir)));
}

// A file already gone was removed by its run (the environment once the command has it): nothing of it to keep.
async function flushFirst(links: readonly string[]): Promise<void> {
  for (const link of links) {
    try {
      return await fsyncPath(link);
    } catch (error) {
      if (errnoOf(error) !== 'ENOENT') throw error;
    }
  }
}

function errnoOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
