import { sampleGroup } from '../process/usage.js';
import type { Run } from './model.js';

/** Between samples of a running command's CPU and memory. */
export const USAGE_SAMPLE_MS = 1000;
/** The first sample waits a little: most of a very short run's cost would be the sampling itself. */
const FIRST_SAMPLE_MS = 200;

/** Samples a local command's process group and keeps the peaks, for the final record. */
export function trackUsage(pgid: number | undefined): { stop(): Run['resources'] } {
  if (pgid === undefined) return { stop: () => undefined };
  let peakRssBytes = 0;
  let cpuSeconds = 0;
  const sample = (): void => {
    sampleGroup(pgid).then(
      (u) => {
        if (!u) return;
        peakRssBytes = Math.max(peakRssBytes, u.rssBytes);
        cpuSeconds = Math.max(cpuSeconds, u.cpuSeconds);
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
