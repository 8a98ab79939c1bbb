import { writeSync } from 'node:fs';
import { findProjectRoot } from '../src/paths.js';
import { openRunService, type OpenOptions, type RunService } from '../src/service/index.js';
import { RunStore, type ResolvedRun } from '../src/store/run-store.js';

/**
 * What a command works with, created on first use and closed once by the
 * CLI's entry point: the project root, the store (and its index), and the
 * run service (through qwexd when it runs, direct otherwise; chosen once).
 */
export class Context {
  readonly cwd = process.cwd();
  private projectRoot: string | undefined;
  private runStore: RunStore | undefined;
  private runService: Promise<RunService> | undefined;

  get project(): string {
    this.projectRoot ??= findProjectRoot(this.cwd);
    return this.projectRoot;
  }

  get store(): RunStore {
    this.runStore ??= new RunStore();
    return this.runStore;
  }

  /** The run service of this invocation (opened once; `startDaemon` counts only on the first call). */
  service(options: OpenOptions = {}): Promise<RunService> {
    this.runService ??= openRunService(this.store, options);
    return this.runService;
  }

  resolve(prefix: string): ResolvedRun {
    return this.store.resolve(prefix, this.project);
  }

  async close(): Promise<void> {
    await (await this.runService?.catch(() => undefined))?.close();
    this.runStore?.close();
  }
}

/** Writes to a stream, waiting when it is full; drops output once the reader has gone (EPIPE). */
export function writer(stream: NodeJS.WriteStream): (chunk: Buffer | string) => Promise<void> {
  let broken = false;
  stream.on('error', () => {
    broken = true;
  });
  return (chunk) =>
    new Promise<void>((resolve) => {
      if (broken || stream.destroyed) return resolve();
      if (stream.write(chunk)) return resolve();
      const done = (): void => {
        stream.off('drain', done);
        stream.off('close', done);
        stream.off('error', done);
        resolve();
      };
      stream.on('drain', done);
      stream.on('close', done);
      stream.on('error', done);
    });
}

/**
 * Writes straight to a file descriptor with blocking writes: the chunk is
 * in the kernel when the promise settles, so the caller may use its buffer
 * again (a synchronous log follower does). Drops output once the reader has
 * gone (EPIPE); waits a moment when the descriptor is non-blocking and full.
 */
export function fdWriter(fd: number): (chunk: Buffer) => Promise<void> {
  let broken = false;
  return async (chunk) => {
    let at = 0;
    while (!broken && at < chunk.length) {
      try {
        at += writeSync(fd, chunk, at, chunk.length - at);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') await new Promise((resolve) => setTimeout(resolve, 1));
        else broken = true; // EPIPE: the reader is gone, as writer() above
      }
    }
  };
}

/**
 * Where a run's followed output goes. On Linux, where Node's own stdout and
 * stderr write synchronously too (so qwex's messages keep their order), the
 * logs are read synchronously into reused buffers and written with blocking
 * writes: about twice the replay speed, and no thread-pool hop per chunk.
 * Elsewhere, through the streams.
 */
export function followOutput(): { onStdout: (chunk: Buffer) => Promise<void>; onStderr: (chunk: Buffer) => Promise<void>; synchronous: boolean } {
  if (process.platform === 'linux') return { onStdout: fdWriter(1), onStderr: fdWriter(2), synchronous: true };
  return { onStdout: writer(process.stdout), onStderr: writer(process.stderr), synchronous: false };
}
