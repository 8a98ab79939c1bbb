import { statSync, watch, type FSWatcher } from 'node:fs';
import { open } from 'node:fs/promises';

/** Read at most this much at once: a follower holds no more than one chunk in memory. */
export const TAIL_CHUNK = 48 * 1024;
/** For filesystems that send no change events: each watched file is looked at this often (once, whatever its number of followers). */
const POLL_MS = 1000;

interface Watched {
  watcher: FSWatcher | undefined;
  poll: NodeJS.Timeout;
  size: number;
  wakers: Set<() => void>;
}

/**
 * Change notifications for log files, shared: one fs.watch and one poll per
 * file, however many followers it has. A follower that waits costs a set
 * entry, never a timer or a query of its own, so idle followers do not
 * slow anything else down.
 */
export class LogWatchers {
  private readonly files = new Map<string, Watched>();

  /** Calls `wake` whenever `path` may have grown. Returns the unsubscribe. */
  watch(path: string, wake: () => void): () => void {
    let entry = this.files.get(path);
    if (!entry) {
      const created: Watched = { watcher: undefined, poll: setInterval(() => this.poll(path), POLL_MS), size: sizeOf(path), wakers: new Set() };
      created.poll.unref();
      try {
        created.watcher = watch(path, { persistent: false }, () => this.wakeAll(path));
        created.watcher.on('error', () => {});
      } catch {
        // no change events here: the poll finds growth
      }
      this.files.set(path, created);
      entry = created;
    }
    const watched = entry;
    watched.wakers.add(wake);
    return () => {
      watched.wakers.delete(wake);
      if (watched.wakers.size === 0 && this.files.get(path) === watched) {
        watched.watcher?.close();
        clearInterval(watched.poll);
        this.files.delete(path);
      }
    };
  }

  /** Wakes every follower of `path` (the run ended: they read to the end and stop). */
  wakeAll(path: string): void {
    for (const wake of [...(this.files.get(path)?.wakers ?? [])]) wake();
  }

  get watchedFiles(): number {
    return this.files.size;
  }

  close(): void {
    for (const entry of this.files.values()) {
      entry.watcher?.close();
      clearInterval(entry.poll);
    }
    this.files.clear();
  }

  private poll(path: string): void {
    const entry = this.files.get(path);
    if (!entry) return;
    const size = sizeOf(path);
    if (size !== entry.size) {
      entry.size = size;
      this.wakeAll(path);
    }
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    // Not there yet, or not readable: no growth to report. A poll timer has no one to throw to; the tail's own read reports a failure.
    return 0;
  }
}

/**
 * Hands `path`'s bytes from `offset` on to `onChunk`, one bounded chunk at
 * a time, waiting for each to be taken (backpressure). Without `follow` it
 * stops at the end of the file. With it, it waits for more until `ended()`
 * says the writer is done, then reads what is left and stops. Resolves with
 * the offset reached; stops early, with no error, when `onChunk` returns false.
 */
export async function tailFile(options: {
  path: string;
  offset: number;
  follow: boolean;
  watchers: LogWatchers;
  ended: () => boolean;
  onChunk: (chunk: Buffer, nextOffset: number) => Promise<boolean>;
  /** Settles when the consumer went away: the tail stops. */
  gone: Promise<void>;
}): Promise<number> {
  let offset = options.offset;
  let wake: (() => void) | undefined;
  // Set by the watcher between two reads: a change came while we read, so read again before sleeping.
  const seen = { change: false };
  const unwatch = options.follow
    ? options.watchers.watch(options.path, () => {
        seen.change = true;
        wake?.();
      })
    : () => {};
  let gone = false;
  void options.gone.then(() => {
    gone = true;
    wake?.();
  });
  try {
    for (;;) {
      // Checked before reading: whatever the writer wrote before it ended is read below.
      const last = !options.follow || options.ended();
      seen.change = false;
      const handle = await open(options.path, 'r').catch(() => undefined);
      try {
        while (handle && !gone) {
          const buffer = Buffer.allocUnsafe(TAIL_CHUNK);
          const { bytesRead } = await handle.read(buffer, 0, TAIL_CHUNK, offset);
          if (bytesRead === 0) break;
          offset += bytesRead;
          if (!(await options.onChunk(buffer.subarray(0, bytesRead), offset))) return offset;
        }
      } finally {
        await handle?.close();
      }
      if (last || gone) return offset;
      if (!seen.change && !options.ended()) await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    unwatch();
  }
}
