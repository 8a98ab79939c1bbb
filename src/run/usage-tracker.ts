import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { RunFiles } from '../paths.js';
import { watchGroup } from '../process/usage.js';
import type { Run } from './model.js';

/** One line of a run's usage.jsonl: when, CPU percent of one core (summed over its tree), resident memory, processes. */
export interface UsageSample {
  t: string;
  cpu: number;
  rss: number;
  procs: number;
}

/**
 * Samples a local command's process group while it runs, keeps the peaks
 * for the final record, and appends every sample to the run's usage.jsonl
 * (for the dashboard's plots). Samples come every second for the first
 * minute, then every 10 s, then every minute after an hour (see
 * sampleIntervalMs): every run a process follows shares one /proc pass per
 * tick. A failed append (a full disk) loses a point of the plot, never the run.
 */
export function trackUsage(pgid: number | undefined, dir: string): { stop(): Run['resources'] } {
  if (pgid === undefined) return { stop: () => undefined };
  let peakRssBytes = 0;
  let cpuSeconds = 0;
  const series = join(dir, RunFiles.usage);
  // The first sample waits a little (watchGroup's default): most of a very short run's cost would be the sampling itself.
  const unwatch = watchGroup(pgid, (u) => {
    peakRssBytes = Math.max(peakRssBytes, u.rssBytes);
    cpuSeconds = Math.max(cpuSeconds, u.cpuSeconds);
    const line: UsageSample = { t: new Date().toISOString(), cpu: u.cpuPercent, rss: u.rssBytes, procs: u.processes };
    try {
      appendFileSync(series, `${JSON.stringify(line)}\n`, { mode: 0o600 });
    } catch {
      // A full disk or a removed run directory: this point of the plot is lost, nothing else.
    }
  });
  return {
    stop: () => {
      unwatch();
      return peakRssBytes > 0 ? { peakRssBytes, cpuSeconds: Math.round(cpuSeconds * 100) / 100 } : undefined;
    },
  };
}
