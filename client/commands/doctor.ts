import { resolve } from 'node:path';
import { indexPath, stateDir } from '../../src/paths.js';
import { reindex, type ReindexReport } from '../../src/reindex.js';
import { isTerminal } from '../../src/run.js';
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

interface DoctorReport {
  stateDir: string;
  index: string;
  project: string;
  indexOk: boolean;
  indexError?: string;
  reindex?: ReindexReport;
  docker?: DockerReport;
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
  if (docker.orphans.length > 0 && !options.removeOrphans) lines.push('                 remove them with: qwex doctor --remove-orphans');
  process.stdout.write(`${lines.join('\n')}\n`);
  return code;
}

/** Looks for qwex containers no active run accounts for (and removes them if asked). An absent engine is reported, not an error. */
async function checkDocker(ctx: Context, remove: boolean): Promise<DockerReport> {
  const { connect, engineEndpoint, findOrphanContainers } = await import('../../src/backends/docker.js');
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

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
