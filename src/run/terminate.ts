import type { StartedProcess } from '../backends/types.js';

/**
 * Stops a started command gracefully: SIGTERM now, SIGKILL once `graceMs`
 * has passed without it ending. Idempotent; `cancel()` drops the pending
 * SIGKILL (the command ended, or the supervisor stops watching).
 */
export class Termination {
  private killTimer: NodeJS.Timeout | undefined;
  private begun = false;

  constructor(private readonly target: StartedProcess) {}

  get started(): boolean {
    return this.begun;
  }

  begin(graceMs: number): void {
    if (this.begun) return;
    this.begun = true;
    this.target.signal('SIGTERM');
    this.killTimer = setTimeout(() => this.target.signal('SIGKILL'), graceMs);
    this.killTimer.unref();
  }

  cancel(): void {
    if (this.killTimer) clearTimeout(this.killTimer);
    this.killTimer = undefined;
  }
}

/** True when `promise` settled within `ms`. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
