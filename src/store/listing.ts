import { findBackend } from '../backends/registry.js';
import type { ListedRun, ResourceUsage } from '../protocol.js';
import { sampleGroup } from '../process/usage.js';
import { isTerminal, type Run } from '../run/model.js';
import type { ListQuery, RunIndex, RunSummary } from './run-index.js';

/** Live resource use of a running run whose command runs on this machine. */
export async function usageOf(run: Run): Promise<ResourceUsage | undefined> {
  if (run.status !== 'running') return undefined;
  const pgid = findBackend(run.job.backend)?.processGroup?.(run);
  if (pgid === undefined) return undefined;
  const sample = await sampleGroup(pgid);
  return sample && { cpuPercent: sample.cpuPercent, rssBytes: sample.rssBytes, processes: sample.processes };
}

/**
 * A listing from the index, with active rows brought up to date (`reconcile`,
 * which records what a dead supervisor left unrecorded) and their resource
 * use sampled. The same for `qwex ps` in direct mode and for qwexd's run.list.
 */
export async function listRuns(
  index: RunIndex,
  query: ListQuery,
  reconcile: (dir: string) => Promise<Run>,
  queuePosition: (dir: string) => number | undefined = () => undefined,
): Promise<ListedRun[]> {
  return Promise.all(index.list(query).map((row) => freshRow(row, reconcile, queuePosition(row.runDir))));
}

async function freshRow(row: RunSummary, reconcile: (dir: string) => Promise<Run>, queuePosition: number | undefined): Promise<ListedRun> {
  if (isTerminal(row.status)) return row;
  let run: Run;
  try {
    run = await reconcile(row.runDir);
  } catch {
    return row; // the run directory is gone or unreadable; the index row is all there is
  }
  const usage = await usageOf(run);
  const waiting = findBackend(run.job.backend)?.waiting?.(run);
  return {
    ...row,
    status: run.status,
    startedAt: run.startedAt ?? null,
    finishedAt: run.finishedAt ?? null,
    exitCode: run.exitCode,
    signal: run.signal,
    ...(queuePosition === undefined ? {} : { queuePosition }),
    ...(usage ? { usage } : {}),
    ...(waiting ? { waiting } : {}),
    ...(run.gpus && run.gpus.length > 0 ? { gpus: run.gpus } : {}),
  };
}
