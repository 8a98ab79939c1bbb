import { DaemonClient } from '../src/daemon-client.js';
import { findProjectRoot } from '../src/paths.js';
import { RunStore, type ResolvedRun } from '../src/store/run-store.js';
import { Runner } from '../src/runner.js';
import { launchMonitor } from '../src/run/monitor-launch.js';
import { Watcher } from '../src/watcher.js';

/**
 * What a command works with, created on first use and closed once by the
 * CLI's entry point: the project root, the store (and its index), the
 * Runner that changes runs and the Watcher that looks at them.
 */
export class Context {
  readonly cwd = process.cwd();
  private projectRoot: string | undefined;
  private runStore: RunStore | undefined;
  private runRunner: Runner | undefined;
  private runWatcher: Watcher | undefined;
  private daemonClient: Promise<DaemonClient | undefined> | undefined;

  get project(): string {
    this.projectRoot ??= findProjectRoot(this.cwd);
    return this.projectRoot;
  }

  get store(): RunStore {
    this.runStore ??= new RunStore();
    return this.runStore;
  }

  get runner(): Runner {
    this.runRunner ??= new Runner(this.store, launchMonitor);
    return this.runRunner;
  }

  get watcher(): Watcher {
    this.runWatcher ??= new Watcher(this.store);
    return this.runWatcher;
  }

  /** The connection to qwexd if it is running (made once); undefined means direct mode. */
  daemon(): Promise<DaemonClient | undefined> {
    this.daemonClient ??= DaemonClient.connectIfRunning();
    return this.daemonClient;
  }

  /** Uses a connection made elsewhere (after starting qwexd) as this context's own; it is closed with the context. */
  adoptDaemon(client: DaemonClient): void {
    this.daemonClient = Promise.resolve(client);
  }

  resolve(prefix: string): ResolvedRun {
    return this.store.resolve(prefix, this.project);
  }

  async close(): Promise<void> {
    this.runStore?.close();
    (await this.daemonClient?.catch(() => undefined))?.close();
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
