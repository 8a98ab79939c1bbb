/**
 * qwex for programs: submit jobs and wait for them, the same calls the CLI
 * makes. `import { submit, wait } from 'qwex'`.
 */
import { loadConfig } from './config/config.js';
import { DaemonClient } from './daemon-client.js';
import { startDaemon } from './daemon-process.js';
import { buildJob, submitterEnv, type JobSpec } from './config/job.js';
import { findProjectRoot, runDir } from './paths.js';
import { Method } from './protocol.js';
import { isTerminal, type Run } from './run/model.js';
import { RunStore } from './store/run-store.js';
import { Runner } from './runner.js';
import { launchMonitor } from './run/monitor-launch.js';
import { Watcher } from './watcher.js';
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
  let client = await DaemonClient.connectIfRunning();
  if (!client && options.startDaemon !== false && process.env.QWEX_NO_DAEMON !== '1') {
    await startDaemon();
    client = await DaemonClient.connect();
  }
  if (client) {
    try {
      return (await client.request(Method.submit, { project, jobs, env: options.env ?? submitterEnv(), provenance: provenance.map((p) => p ?? null) })).runs;
    } finally {
      client.close();
    }
  }
  const store = new RunStore();
  try {
    const runner = new Runner(store, launchMonitor);
    const created = runner.createMany(jobs, project, { supervisor: 'direct', provenance, ...(options.env ? { baseEnv: options.env } : {}) });
    return created.map(({ run, dir }) => runner.launch(dir) ?? run);
  } finally {
    store.close();
  }
}

/** Waits until every run has ended and returns the final records, in the order given. */
export async function wait(runs: readonly Pick<Run, 'id' | 'project'>[]): Promise<Run[]> {
  const store = new RunStore();
  try {
    const runner = new Runner(store, launchMonitor);
    const watcher = new Watcher(store);
    return await Promise.all(
      runs.map(async (run) => {
        const dir = runDir(run.project, run.id);
        const current = store.read(dir);
        return isTerminal(current.status) ? current : watcher.waitForEnd(dir, { refresh: (d) => runner.reconcile(d) });
      }),
    );
  } finally {
    store.close();
  }
}
