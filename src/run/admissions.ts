import type { Run } from './model.js';

/**
 * A rule that decides when a queued run may start, beyond the concurrency
 * limit (its dependencies have ended, the GPUs it asks for are free...).
 * Consulted in queue order whenever the queue moves; a run one rule holds
 * back does not hold back the runs behind it.
 */
export interface Admission {
  /**
   * `start`: it may start now; `patch` (applied to the record before it
   * starts) records what was handed to it. `wait`: not yet, and why (shown
   * on the waiting run). `cancel`: it never will (a dependency failed): it
   * is recorded as cancelled with the reason.
   */
  admit(dir: string, run: Run): { start: true; patch?: (run: Run) => Run } | { wait: string } | { cancel: string };
  /** The run ended (or was lost, or cancelled): give back what it held. */
  release?(dir: string, run: Run): void;
  /** After a restart: a run already started (adopted) holds what its record says. */
  restore?(dir: string, run: Run): void;
}

/**
 * The admission rules of a supervisor's queue, asked together: the first
 * that says wait or cancel decides; the patches of those that let a run
 * start are applied in order. Why a held-back run waits is kept for
 * listings.
 */
export class AdmissionRules {
  private readonly rules: Admission[] = [];
  private readonly reasons = new Map<string, string>();

  constructor(private readonly logError: (event: string, fields: Record<string, unknown>) => void) {}

  get empty(): boolean {
    return this.rules.length === 0;
  }

  add(rule: Admission): void {
    this.rules.push(rule);
  }

  waitReason(dir: string): string | undefined {
    return this.reasons.get(dir);
  }

  /** 'wait': not yet; `{cancel}`: never; otherwise it may start, with the patch to apply first (if any). */
  admit(dir: string, run: Run): 'wait' | { cancel: string } | ((run: Run) => Run) | undefined {
    const patches: ((run: Run) => Run)[] = [];
    for (const rule of this.rules) {
      const decision = rule.admit(dir, run);
      if ('wait' in decision) {
        this.reasons.set(dir, decision.wait);
        return 'wait';
      }
      if ('cancel' in decision) {
        this.reasons.delete(dir);
        return { cancel: decision.cancel };
      }
      if (decision.patch) patches.push(decision.patch);
    }
    this.reasons.delete(dir);
    return patches.length === 0 ? undefined : (r: Run) => patches.reduce((acc, patch) => patch(acc), r);
  }

  release(dir: string, run: Run): void {
    this.reasons.delete(dir);
    for (const rule of this.rules) {
      try {
        rule.release?.(dir, run);
      } catch (error) {
        this.logError('admission-release-failed', { dir, message: (error as Error).message });
      }
    }
  }

  restore(dir: string, run: Run): void {
    for (const rule of this.rules) rule.restore?.(dir, run);
  }
}
