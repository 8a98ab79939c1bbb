import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { findBackend } from '../backends/registry.js';
import { groupMembers } from '../process/usage.js';
import type { RunGpu } from '../run/model.js';
import type { RunStore } from '../store/run-store.js';
import type { Gpu, GpuProcess } from './discovery.js';

/** In a run directory: one JSON line per look at the GPUs the run held (for plots of utilisation and memory). */
export const GPU_USAGE_FILE = 'gpu-usage.jsonl';

/** One line of gpu-usage.jsonl. */
export interface GpuUsageSample {
  /** ISO time of the look. */
  at: string;
  /** Each GPU the run holds, as a whole (the run has it to itself). */
  gpus: { index: number; uuid: string; memoryUsedMb: number; memoryTotalMb: number; utilizationPercent?: number }[];
  /** The run's own compute processes and their GPU memory; absent when the processes could not be listed. */
  processes?: { pid: number; gpu: string; memoryMb: number }[];
  /** The sum of `processes`' memory. */
  memoryMb?: number;
}

/**
 * Appends a sample to each running holder's gpu-usage.jsonl, from one
 * inventory and one process listing shared by all. A run's processes are
 * those of its process group when its command runs here as one (their
 * pids), else every process on the GPUs it holds (a container's).
 */
export function writeUsageSamples(
  store: RunStore,
  held: ReadonlyMap<string, RunGpu[]>,
  inventory: Gpu[],
  processes: GpuProcess[] | undefined,
  onError: (dir: string, error: Error) => void,
): void {
  const at = new Date().toISOString();
  const byUuid = new Map(inventory.map((g) => [g.uuid, g]));
  for (const [dir, gpus] of held) {
    try {
      const run = store.read(dir);
      if (run.status !== 'running') continue;
      const sample: GpuUsageSample = {
        at,
        gpus: gpus.map((held) => {
          const now = byUuid.get(held.uuid);
          return {
            index: held.index,
            uuid: held.uuid,
            memoryUsedMb: now?.memoryUsedMb ?? 0,
            memoryTotalMb: now?.memoryTotalMb ?? 0,
            ...(now?.utilizationPercent === undefined ? {} : { utilizationPercent: now.utilizationPercent }),
          };
        }),
      };
      if (processes) {
        const pgid = findBackend(run.job.backend)?.processGroup?.(run);
        const members = pgid === undefined ? undefined : new Set(groupMembers(pgid));
        const uuids = new Set(gpus.map((g) => g.uuid));
        const mine = processes.filter((p) => (members ? members.has(p.pid) : uuids.has(p.gpuUuid)));
        sample.processes = mine.map((p) => ({ pid: p.pid, gpu: p.gpuUuid, memoryMb: p.usedMemoryMb }));
        sample.memoryMb = mine.reduce((sum, p) => sum + p.usedMemoryMb, 0);
      }
      appendFileSync(join(dir, GPU_USAGE_FILE), `${JSON.stringify(sample)}\n`, { mode: 0o600 });
    } catch (error) {
      onError(dir, error as Error);
    }
  }
}
