import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { RunFiles } from '../paths.js';
import { sampleGroup } from '../process/usage.js';
import type { Run } from './model.js';

/** Between samples of a running command's CPU and memory. */
export const USAGE_SAMPLE_MS = 1000;
/** The first sample waits a little: most of a very short run's cost would be the sampling itself. */
const FIRST_SAMPLE_MS = 200;
/**
 * A long run's series is thinned as it grows: every sample for the first
 * minute, then one in 10 (every 10 s), then one in 60 after an hour, so a
 * week-long run's series stays a few thousand lines.
 */
function keepSample(n: number): boolean {
  if (n < 60) return true;
  if (n < 3600) return n % 10 === 0;
  return n % 60 === 0;
}

/** One line of a run's usage.jsonl: when, CPU percent of one core (summed over its tree), resident memory, processes. */
export interface UsageSample {
  t: string;
  cpu: number;
  rss: number;
  procs: number;
}

/**
 * Samples a local command's process group while it runs, keeps the peaks
 * for the final record, and appends a thinned time series to the run's
 * usage.jsonl (for the dashboard's plots). A failed append (a full disk)
 * loses a point of the plot, never the run.
 */
export function trackUsage(pgid: number | undefined, dir: string): { stop(): Run['resources'] } {
  if (pgid === undefined) return { stop: () => undefined };
  let peakRssBytes = 0;
  let cpuSeconds = 0;
  let n = 0;
  const series = join(dir, RunFiles.usage);
  const sample = (): void => {
    sampleGroup(pgid).then(
      (u) => {
        if (!u) return;
        peakRssBytes = Math.max(peakRssBytes, u.rssBytes);
        cpuSeconds = Math.max(cpuSeconds, u.cpuSeconds);
        if (!keepSample(n++)) return;
        const line: UsageSample = { t: new Date().toISOString(), cpu: u.cpuPercent, rss: u.rssBytes, procs: u.processes };
        try {
          appendFileSync(series, `${JSON.stringify(line)}\n`, { mode: 0o600 });
        } catch {
          // A full disk or a removed run directory: this point of the plot is lost, nothing else.
        }
      },
      () => {
        // A process of the group exited between listing and reading it: the next sample counts the rest.
      },
    );
  };
  const first = setTimeout(sample, FIRST_SAMPLE_MS);
  first.unref();
  const timer = setInterval(sample, USAGE_SAMPLE_MS);
  timer.unref();
  return {
    stop: () => {
      clearTimeout(first);
      clearInterval(timer);
      return peakRssBytes > 0 ? { peakRssBytes, cpuSeconds: Math.round(cpuSeconds * 100) / 100 } : undefined;
    },
  };
}
