/**
 * qwex for programs: submit jobs and wait for them, the same calls the CLI
 * makes, through the same run service. `import { submit, wait } from 'qwex'`.
 */
import { loadConfig } from './config/config.js';
import { buildJob, type JobSpec } from './config/job.js';
import { findProjectRoot, runDir } from './paths.js';
import type { Run } from './run/model.js';
import { openRunService } from './service/index.js';
import { RunStore } from './store/run-store.js';
import { prepareWorkspaces, workspaceMode, type WorkspaceMode } from './workspace/prepare.js';

export type { JobSpec } from './config/job.js';
export type { Run, RunStatus } from './run/model.js';
export { QwexError, ErrorCode } from './errors.js';

export interface SubmitOptions {
  /** Where the jobs run from and which project they belong to (default: process.cwd()). */
  cwd?: string;
  /** The environment the jobs start from (default: process.env). */
  env?: Record<string, string>;
  /** Start qwexd if it is not running (default true): it queues the jobs. With false and no qwexd, they all start at once. */
  startDaemon?: boolean;
  /** Run in a snapshot of the project (the default) or in place. */
  workspace?: WorkspaceMode;
}

/**
 * Submits jobs in one request and returns their records, in order. Through
 * qwexd (started if needed), which queues them; in direct mode (no qwexd and
 * startDaemon false, or QWEX_NO_DAEMON=1) they all start at once.
 */
export async function submit(specs: readonly JobSpec[], options: SubmitOptions = {}): Promise<Run[]> {
  const cwd = options.cwd ?? process.cwd();
  const project = findProjectRoot(cwd);
  const { config } = await loadConfig(project);
  const jobs = specs.map((spec) => buildJob(spec, config, cwd, project));
  if (jobs.length === 0) return [];
  const provenance = await prepareWorkspaces(jobs, project, config, options.workspace ?? workspaceMode({}, config, false));
  const store = new RunStore();
  const service = await openRunService(store, { startDaemon: options.startDaemon !== false });
  try {
    return await service.submit({ project, jobs, provenance, ...(options.env ? { env: options.env } : {}) });
  } finally {
    await service.close();
    store.close();
  }
}

/** Waits until every run has ended and returns the final records, in the order given. */
export async function wait(runs: readonly Pick<Run, 'id' | 'project'>[]): Promise<Run[]> {
  const store = new RunStore();
  const service = await openRunService(store);
  try {
    return await Promise.all(runs.map((run) => service.wait({ id: run.id, dir: runDir(run.project, run.id) })));
  } finally {
    await service.close();
    store.close();
  }
}
