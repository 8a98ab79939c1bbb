import type { RunStatus } from '../api.js';

/** A run's status as a coloured badge that also says it in words (colour is never the only sign). */
export function StatusBadge({ status }: { status: RunStatus | string }) {
  return <span class={`status status-${status}`}>{status}</span>;
}

export const ACTIVE_STATUSES: readonly string[] = ['pending', 'running'];

export function isActive(status: string): boolean {
  return ACTIVE_STATUSES.includes(status);
}
