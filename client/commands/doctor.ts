import { resolve } from 'node:path';
import { loadConfig } from '../../src/config/config.js';
import { indexPath, runDir, stateDir } from '../../src/paths.js';
import { reindex, type ReindexReport } from '../../src/store/reindex.js';
import { isTerminal } from '../../src/run/model.js';
import type { Context } from '../context.js';

interface DoctorOptions {
  reindex?: boolean;
  removeOrphans?: boolean;
  json?: boolean;
}

interface DockerReport {
  /** Where the engine was looked for. */
  engine: string;
  reachable: boolean;
  error?: string;
  orphans: { id: string; name: string; runId: string; state: string; reason: string; removed?: boolean }[];
}

interface ClusterReport {
  backend: 'k8s' | 'kueue';
  context?: string;
  namespace?: string;
  reachable: boolean;
  error?: string;
  orphans: { name: string; namespace: string; runId: string; reason: string; removed?: boolean }[];
}

interface DoctorReport {
  stateDir: string;
  index: string;
  project: string;
  indexOk: boolean;
  indexError?: string;
  reindex?: ReindexReport;
  docker?: DockerReport;
  /** Only for the cluster backends this project configures (backends.k8s / backends.kueue, or backend: k8s|kueue). */
  clusters?: ClusterReport[];
}

export default async function doctor(ctx: Context, projects: string[], options: DoctorOptions): Promise<number> {
  const report: DoctorReport = { stateDir: stateDir(), index: indexPath(), project: ctx.project, indexOk: true };
  let code = 0;
  try {
    if (options.reindex) {
      const targets = projects.length > 0 ? projects.map((p) => resolve(p)) : unique([ctx.project, ...ctx.store.runIndex().projects()]);
      report.reindex = reindex(ctx.store, targets);
    } else {
      ctx.store.runIndex().list({ limit: 1 });
    }
  } catch (error) {
    report.indexOk = false;
    report.indexError = (error as Error).message;
    code = 8;
  }
  report.docker = await checkDocker(ctx, options.removeOrphans === true);
  const clusters = await checkClusters(ctx, options.removeOrphans === true);
  if (clusters.length > 0) report.clusters = clusters;
  if (options.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return code;
  }
  const lines = [`state directory  ${report.stateDir}`, `run index        ${report.index} (${report.indexOk ? 'ok' : `error: ${report.indexError}`})`, `project          ${report.project}`];
  if (report.reindex) {
    lines.push(`reindexed        ${report.reindex.runs} run(s) in ${report.reindex.projects.length} project(s)`);
    for (const bad of report.reindex.invalid) lines.push(`unreadable       ${bad.dir}: ${bad.message}`);
  }
  const docker = report.docker;
  lines.push(`docker engine    ${docker.engine} (${docker.reachable ? 'answers' : `not reachable: ${docker.error}`})`);
  for (const o of docker.orphans) {
    lines.push(`orphan container ${o.name} (${o.state}): ${o.reason}${o.removed ? ' - removed' : ''}`);
  }
  for (const c of report.clusters ?? []) {
    lines.push(`${c.backend.padEnd(16)} context ${c.context ?? '?'}, namespace ${c.namespace ?? '?'} (${c.reachable ? 'answers' : `not reachable: ${c.error}`})`);
    for (const o of c.orphans) lines.push(`orphan job       ${o.namespace}/${o.name}: ${o.reason}${o.removed ? ' - removed' : ''}`);
  }
  const orphans = docker.orphans.length + (report.clusters ?? []).reduce((n, c) => n + c.orphans.length, 0);
  if (orphans > 0 && !options.removeOrphans) lines.push('                 remove them with: qwex doctor --remove-orphans');
  process.stdout.write(`${lines.join('\n')}\n`);
  return code;
}

/** Looks for qwex containers no active run accounts for (and removes them if asked). An absent engine is reported, not an error. */
async function checkDocker(ctx: Context, remove: boolean): Promise<DockerReport> {
  const { connect, engineEndpoint, findOrphanContainers } = await import('../../src/backends/docker/backend.js');
  const report: DockerReport = { engine: engineEndpoint(), reachable: false, orphans: [] };
  let docker: Awaited<ReturnType<typeof connect>>;
  try {
    docker = await connect();
  } catch (error) {
    report.error = (error as Error).message;
    return report;
  }
  report.reachable = true;
  const isActive = (dir: string): boolean | undefined => {
    try {
      return !isTerminal(ctx.store.read(dir).status);
    } catch {
      return undefined;
    }
  };
  for (const orphan of await findOrphanContainers(docker, isActive)) {
    let removed: boolean | undefined;
    if (remove) removed = await docker.getContainer(orphan.id).remove({ force: true }).then(() => true, () => false);
    report.orphans.push({ ...orphan, ...(removed === undefined ? {} : { removed }) });
  }
  return report;
}

/** The same for qwex Jobs in each cluster this project's configuration names (none: nothing is contacted). */
async function checkClusters(ctx: Context, remove: boolean): Promise<ClusterReport[]> {
  let config: Awaited<ReturnType<typeof loadConfig>>['config'];
  try {
    ({ config } = await loadConfig(ctx.project));
  } catch {
    return []; // a broken configuration is reported by the commands that use it; doctor still checks the rest
  }
  const names = (['k8s', 'kueue'] as const).filter((b) => config.backend === b || config.backends[b] !== undefined);
  if (names.length === 0) return [];
  const { findOrphanJobs, deleteJobAndPods } = await import('../../src/backends/k8s/backend.js');
  const isActive = (runId: string, project: string): boolean | undefined => {
    try {
      return !isTerminal(ctx.store.read(runDir(project, runId)).status);
    } catch {
      return undefined;
    }
  };
  const reports: ClusterReport[] = [];
  const seen = new Set<string>();
  for (const backend of names) {
    const options = (config.backends[backend] ?? {}) as { context?: string; namespace?: string };
    const report: ClusterReport = { backend, reachable: false, orphans: [] };
    try {
      const { cluster, orphans } = await findOrphanJobs(options, isActive);
      Object.assign(report, { reachable: true, context: cluster.context, namespace: cluster.namespace });
      const where = `${cluster.server} ${cluster.context} ${cluster.namespace}`;
      if (seen.has(where)) continue; // k8s and kueue in the same namespace: one report
      seen.add(where);
      for (const orphan of orphans) {
        let removed: boolean | undefined;
        if (remove) removed = await deleteJobAndPods(cluster, orphan.name).then(() => true, () => false);
        report.orphans.push({ ...orphan, ...(removed === undefined ? {} : { removed }) });
      }
    } catch (error) {
      report.error = (error as Error).message;
    }
    reports.push(report);
  }
  return reports;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
