import { isAbsolute, join, relative } from 'node:path';
import { backendDescriptor } from '../backends/registry.js';
import type { QwexConfig } from '../config/config.js';
import { ErrorCode, QwexError } from '../errors.js';
import type { Progress } from '../progress.js';
import { gitProvenance } from './provenance.js';
import type { Job, Provenance } from '../run/model.js';
import { ContentStore, snapshotWorkspace } from './snapshot.js';

export type WorkspaceMode = 'snapshot' | 'inplace';

/**
 * Snapshots the project for jobs that run in snapshot mode and records which
 * snapshot each job runs. Jobs with the same artifact directories share one
 * snapshot. Returns the provenance to record with each job.
 */
export async function prepareWorkspaces(jobs: Job[], project: string, config: QwexConfig, mode: WorkspaceMode, options: { progress?: Progress } = {}): Promise<(Provenance | undefined)[]> {
  // A run on another machine always gets a snapshot: it is what is sent there (unless it sends nothing).
  const remote = (job: Job): boolean => backendDescriptor(job.backend).traits.remote;
  const sent = (job: Job): boolean => remote(job) && (backendDescriptor(job.backend).sendsWorkspace?.(job) ?? true);
  if (mode === 'inplace' && !jobs.some(sent)) return jobs.map(() => undefined);
  const store = new ContentStore();
  const git = gitProvenance(project);
  const byExclude = new Map<string, string>();
  const provenance: (Provenance | undefined)[] = [];
  for (const job of jobs) {
    if ((mode === 'inplace' && !remote(job)) || (remote(job) && !sent(job))) {
      provenance.push(undefined);
      continue;
    }
    const cwd = relative(project, job.cwd);
    if (cwd.startsWith('..') || isAbsolute(cwd)) {
      throw new QwexError(ErrorCode.Usage, `the working directory ${job.cwd} is outside the project ${project}`, {
        hint: 'snapshot mode copies the project: run from inside it, or use --in-place',
      });
    }
    // The run's artifact directories are left out: they start empty in its copy.
    const exclude = job.artifacts.watch.map((w) => relative(project, join(job.cwd, w)).split('\\').join('/')).sort();
    const key = JSON.stringify(exclude);
    let manifest = byExclude.get(key);
    if (manifest === undefined) {
      manifest = (await snapshotWorkspace(project, store, { exclude, maxBytes: config.workspaceMaxMb * 1e6, ...(options.progress ? { progress: options.progress } : {}) })).id;
      byExclude.set(key, manifest);
    }
    job.workspace = { mode: 'snapshot', manifest, cwd: cwd.split('\\').join('/') };
    provenance.push({ manifest, ...(git ? { git } : {}) });
  }
  return provenance;
}

/** --snapshot / --in-place, then the config, then the default: in place for foreground runs, snapshot for the rest. */
export function workspaceMode(flags: { snapshot?: boolean; inPlace?: boolean }, config: QwexConfig, foreground: boolean): WorkspaceMode {
  if (flags.snapshot && flags.inPlace) throw new QwexError(ErrorCode.Usage, '--snapshot and --in-place cannot be used together');
  if (flags.snapshot) return 'snapshot';
  if (flags.inPlace) return 'inplace';
  if (config.workspace) return config.workspace;
  return foreground ? 'inplace' : 'snapshot';
}
