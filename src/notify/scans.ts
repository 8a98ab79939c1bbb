import type { NotifyLog } from './notifier.js';

/**
 * The periodic scans of a notification source (qwexd's runs, qwexcloud's):
 * one scan at a time, whichever kind (a tick that finds one running is
 * skipped); a scan that fails is logged and tried again at its next tick.
 * Timers never keep the process alive.
 */
export class ScanSchedule {
  private readonly timers: NodeJS.Timeout[] = [];
  private scanning: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly log: NotifyLog) {}

  /** Closed: a scan under way stops at its next step. */
  get closed(): boolean {
    return this.stopped;
  }

  /** Scans now, unless one is under way (then settles with that one). */
  run(body: () => Promise<void>): Promise<void> {
    if (this.stopped || this.scanning) return this.scanning ?? Promise.resolve();
    this.scanning = (async () => {
      try {
        await body();
      } catch (error) {
        this.log('error', 'notify-scan-failed', { message: (error as Error).message });
      } finally {
        this.scanning = undefined;
      }
    })();
    return this.scanning;
  }

  every(ms: number, body: () => Promise<void>): void {
    const timer = setInterval(() => void this.run(body), ms);
    timer.unref();
    this.timers.push(timer);
  }

  /** No more scans; settles once the one under way has ended. */
  async close(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    await this.scanning;
  }
}
