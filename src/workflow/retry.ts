import { isTerminal, type Run } from '../run/model.js';

/**
 * Whether a run that ended gets another attempt: its job asks for retries,
 * it ended in a way the policy retries (`failed`, `lost`; a cancelled run
 * never is), and attempts are left. The same answer for qwexd, which
 * creates the attempt, and for a client following the run.
 */
export function willRetry(run: Run): boolean {
  const policy = run.job.retry;
  if (!policy || !isTerminal(run.status)) return false;
  if (run.status !== 'failed' && run.status !== 'lost') return false;
  if (!policy.on.includes(run.status)) return false;
  return attemptNumber(run) <= policy.limit;
}

export function attemptNumber(run: Run): number {
  return run.job.attempt?.number ?? 1;
}

/** How long attempt `next` (2 for the first retry) waits after the one before ended: the backoff, doubled for each later attempt. */
export function backoffBefore(run: Run, next: number): number {
  const base = run.job.retry?.backoffMs ?? 0;
  return base * 2 ** Math.max(0, next - 2);
}
