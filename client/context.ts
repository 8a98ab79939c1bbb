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
