import { watch, type FSWatcher } from 'node:fs';
import { RunFiles } from '../paths.js';
import { isTerminal, type Run } from './model.js';

/** How often runs supervised by other processes are re-checked when no file event arrived. */
const SWEEP_MS = 2000;

/**
 * The runs a long-lived supervisor watches but does not supervise (a
 * direct-mode monitor has them): their record is looked at (`check`, which
 * brings it up to date and hands the run over when its supervisor died) on
 * each change of run.json and every few seconds, and `ended` is told once
 * each one ends.
 */
export class WatchedRuns {
  private readonly watched = new Map<string, FSWatcher | undefined>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly check: (dir: string) => Promise<Run>,
    private readonly ended: (dir: string, run: Run) => void,
    private readonly warn: (event: string, fields: Record<string, unknown>) => void,
  ) {
    this.timer = setInterval(() => void this.sweep(), SWEEP_MS);
    this.timer.unref();
  }

  get size(): number {
    return this.watched.size;
  }

  add(dir: string): void {
    if (this.watched.has(dir)) return;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (name === null || name === RunFiles.record) void this.look(dir);
      });
      watcher.on('error', () => {
        // The run directory went away: the sweep finds out and stops watching.
      });
    } catch {
      // No watch support here: the sweep still finds the end.
    }
    this.watched.set(dir, watcher);
  }

  delete(dir: string): void {
    this.watched.get(dir)?.close();
    this.watched.delete(dir);
  }

  close(): void {
    clearInterval(this.timer);
    for (const watcher of this.watched.values()) watcher?.close();
    this.watched.clear();
  }

  private async look(dir: string): Promise<void> {
    let run: Run;
    try {
      run = await this.check(dir);
    } catch (error) {
      this.warn('check-failed', { dir, message: (error as Error).message });
      return;
    }
    if (!this.watched.has(dir) || !isTerminal(run.status)) return;
    this.delete(dir);
    this.ended(dir, run);
  }

  private async sweep(): Promise<void> {
    for (const dir of [...this.watched.keys()]) await this.look(dir);
  }
}
