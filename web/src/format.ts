import type { CloudRun } from './api.js';

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

/** 1536 -> "1.5 KB" (powers of 1024, as `qwex artifacts` prints them). */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** 135000 -> "2m 15s". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** How long a run ran (or has run so far, at `now`); empty before it started. */
export function runDuration(run: Pick<CloudRun, 'startedAt' | 'finishedAt'>, now: number): string {
  if (!run.startedAt) return '';
  const end = run.finishedAt ? Date.parse(run.finishedAt) : now;
  return formatDuration(end - Date.parse(run.startedAt));
}

/** A time as a person reads it here: today's as a time, older ones with their date. */
export function formatTime(iso: string | null): string {
  if (!iso) return '';
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    : date.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export function shortId(id: string): string {
  return id.slice(0, 13);
}

/** What a run's exit column says: its code, or the signal that ended it. */
export function exitText(run: Pick<CloudRun, 'exitCode' | 'signal'>): string {
  if (run.signal) return run.signal;
  return run.exitCode === null ? '' : String(run.exitCode);
}

/** "Kueue LocalQueue gpu, #3: Workload quota exceeded" from a run's waiting. */
export function waitingText(run: Pick<CloudRun, 'waiting'>): string {
  const w = run.waiting;
  if (!w) return '';
  const where = [w.where ?? (w.phase === 'queued' ? 'queued' : 'admitted, not running yet'), w.position === undefined ? '' : `#${w.position}`].filter(Boolean).join(' ');
  const why = [w.reason, w.message].filter(Boolean).join(': ');
  return why ? `${where}: ${why}` : where;
}
