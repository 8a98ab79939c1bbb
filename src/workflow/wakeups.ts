/**
 * When to ask the queue again about runs held back for something that
 * sends no event here: the end of a retry's backoff, and runs they wait
 * for that another process supervises (a direct-mode monitor, or nobody
 * since their supervisor died): those are looked at every `sweepMs`.
 */
export class Wakeups {
  /** One timer per moment, however often the queue asks. */
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private readonly awaited = new Set<string>();
  private readonly sweepTimer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly poke: () => void,
    /** Brings a run's record up to date (reconcile: records the end of a run whose supervisor died). */
    private readonly refresh: (dir: string) => Promise<unknown>,
    sweepMs: number,
  ) {
    this.sweepTimer = setInterval(() => void this.sweep(), sweepMs);
    this.sweepTimer.unref();
  }

  at(time: number): void {
    if (this.closed || this.timers.has(time)) return;
    const timer = setTimeout(() => {
      this.timers.delete(time);
      this.poke();
    }, Math.max(0, time - Date.now()) + 10);
    timer.unref();
    this.timers.set(time, timer);
  }

  /** A queued run waits for the run in `dir`, which is still active. */
  awaiting(dir: string): void {
    this.awaited.add(dir);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const timer of this.timers.values()) clearTimeout(timer);
  }

  private async sweep(): Promise<void> {
    if (this.awaited.size === 0) return;
    const dirs = [...this.awaited];
    this.awaited.clear(); // the queue adds back those still awaited when it asks again
    for (const dir of dirs) await this.refresh(dir).catch(() => undefined);
    if (!this.closed) this.poke();
  }
}
