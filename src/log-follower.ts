import { closeSync, openSync, readSync, watch, type FSWatcher } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/**
 * Follows a growing file by byte offset and hands over raw chunks as they
 * land: partial lines included (progress bars that redraw with '\r' show
 * up live), binary output unchanged. Wakes on fs.watch events, with a slow
 * poll as a fallback for filesystems that send none.
 *
 * Written here rather than with tail-file: that package is line-oriented
 * and reports character positions, so it would hold back partial lines and
 * could not resume from a byte offset.
 */
export interface LogFollowerOptions {
  /** Byte offset to start from (0 replays everything). */
  offset?: number;
  /** Called for each chunk in order; the follower waits for a returned promise (backpressure). */
  onData: (chunk: Buffer, offset: number) => void | Promise<void>;
  pollMs?: number;
  /**
   * For a follower with nothing else to do meanwhile (the CLI following a
   * run): reads with readSync into one buffer used again for every chunk
   * (no thread-pool round trip per read: less latency on a busy machine, and
   * about twice the replay speed), yielding to the event loop every
   * YIELD_BYTES. onData must be done with a chunk once its promise settles:
   * it must not keep it.
   */
  synchronous?: boolean;
}

const CHUNK = 1024 * 1024;
/** How much a synchronous follower hands over before it lets timers, signals and file events run. */
const YIELD_BYTES = 16 * CHUNK;

export class LogFollower {
  private offset: number;
  private readonly path: string;
  private readonly options: LogFollowerOptions;
  private handle: FileHandle | undefined;
  private watcher: FSWatcher | undefined;
  private wake: (() => void) | undefined;
  private finishing = false;
  private disposed = false;
  private loop: Promise<void> | undefined;

  constructor(path: string, options: LogFollowerOptions) {
    this.path = path;
    this.options = options;
    this.offset = options.offset ?? 0;
  }

  /** Bytes handed over so far (the offset of the next byte). */
  get position(): number {
    return this.offset;
  }

  start(): void {
    this.loop ??= this.pump();
  }

  /** Reads whatever is left up to the end of the file, then stops. Resolves with the final offset. */
  async finish(): Promise<number> {
    this.finishing = true;
    this.start();
    this.wake?.();
    await this.loop;
    return this.offset;
  }

  /** Stops at once, without draining. Idempotent. */
  async dispose(): Promise<void> {
    this.disposed = true;
    this.wake?.();
    await this.loop?.catch(() => {});
  }

  private async pump(): Promise<void> {
    if (this.options.synchronous) return this.pumpSynchronously();
    try {
      this.handle = await open(this.path, 'r');
      this.watchFile();
      while (!this.disposed) {
        // A fresh buffer per read: the chunk is handed over without a copy, and nothing is held between reads.
        const buffer = Buffer.allocUnsafe(CHUNK);
        const { bytesRead } = await this.handle.read(buffer, 0, CHUNK, this.offset);
        if (bytesRead > 0) {
          const chunk = buffer.subarray(0, bytesRead);
          const at = this.offset;
          this.offset += bytesRead;
          await this.options.onData(chunk, at);
          continue;
        }
        if (this.finishing) break;
        await this.sleep();
      }
    } finally {
      this.watcher?.close();
      await this.handle?.close();
    }
  }

  private async pumpSynchronously(): Promise<void> {
    let fd: number | undefined;
    try {
      // As open() above: a missing file rejects the loop (and whoever awaits finish()).
      await Promise.resolve();
      fd = openSync(this.path, 'r');
      this.watchFile();
      const buffer = Buffer.allocUnsafe(CHUNK);
      let sinceYield = 0;
      while (!this.disposed) {
        const bytesRead = readSync(fd, buffer, 0, CHUNK, this.offset);
        if (bytesRead > 0) {
          const at = this.offset;
          this.offset += bytesRead;
          await this.options.onData(buffer.subarray(0, bytesRead), at);
          sinceYield += bytesRead;
          if (sinceYield >= YIELD_BYTES) {
            sinceYield = 0;
            await new Promise<void>((resolve) => setImmediate(resolve));
          }
          continue;
        }
        sinceYield = 0;
        if (this.finishing) break;
        await this.sleep();
      }
    } finally {
      this.watcher?.close();
      if (fd !== undefined) closeSync(fd);
    }
  }

  private watchFile(): void {
    try {
      this.watcher = watch(this.path, { persistent: false }, () => this.wake?.());
      this.watcher.on('error', () => {});
    } catch {
      // no watch support here: the poll below still finds new data
    }
  }

  /** Until the file changes (or the poll interval passes), or finish()/dispose() is called. */
  private sleep(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.options.pollMs ?? 250);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }
}
