import type * as k8s from '@kubernetes/client-node';
import type { OrphanContext, OrphanReport } from '../types.js';
import { clusterError, connectCluster } from './cluster.js';
import { ANNOTATION_PROJECT, LABEL_RUN_ID } from './manifest.js';

/**
 * qwex Jobs that no active run accounts for, in every cluster this project
 * uses: those its configuration names (backends.k8s / backends.kueue, or
 * either as the default backend) and those its run records name (runs
 * started with --context / --namespace). A Job is an orphan when there is no
 * run record where its labels and annotation say, or the record already
 * ended (a Job kept with keep_jobs, or one whose deletion failed).
 */
export async function findOrphanJobs(context: OrphanContext, backends: readonly string[]): Promise<OrphanReport[] | undefined> {
  const targets = new Map<string, { context?: string; namespace?: string }>();
  const add = (t: { context?: unknown; namespace?: unknown }): void => {
    const target = {
      ...(typeof t.context === 'string' ? { context: t.context } : {}),
      ...(typeof t.namespace === 'string' ? { namespace: t.namespace } : {}),
    };
    targets.set(JSON.stringify([target.context ?? '', target.namespace ?? '']), target);
  };
  const config = context.config;
  for (const name of backends) {
    const section = config?.backends[name];
    if (section !== undefined || config?.backend === name) add(section ?? {});
  }
  for (const details of context.recorded(backends)) add(details);
  if (targets.size === 0) return undefined;

  const reports: OrphanReport[] = [];
  const seen = new Set<string>();
  for (const target of targets.values()) {
    const report: OrphanReport = { backend: 'k8s', where: `context ${target.context ?? '(current)'}, namespace ${target.namespace ?? '(default)'}`, reachable: false, orphans: [] };
    try {
      const cluster = await connectCluster(target);
      report.where = `context ${cluster.context}, namespace ${cluster.namespace}`;
      const key = `${cluster.server} ${cluster.context} ${cluster.namespace}`;
      if (seen.has(key)) continue; // named twice (config and records, or k8s and kueue): one report
      seen.add(key);
      let items: k8s.V1Job[];
      try {
        items = (await cluster.batch.listNamespacedJob({ namespace: cluster.namespace, labelSelector: LABEL_RUN_ID })).items;
      } catch (error) {
        throw clusterError(error, cluster, { verb: 'list', resource: 'jobs' });
      }
      report.reachable = true;
      for (const job of items) {
        const runId = job.metadata?.labels?.[LABEL_RUN_ID] ?? '';
        const project = job.metadata?.annotations?.[ANNOTATION_PROJECT];
        const active = project === undefined ? undefined : context.isActive(context.runDir(project, runId));
        if (active === true) continue;
        const name = job.metadata?.name ?? '';
        const reason = active === false ? 'its run has ended' : project === undefined ? 'it names no project' : `no run record for ${runId} in ${project}`;
        report.orphans.push({
          id: name,
          what: `Job ${cluster.namespace}/${name}`,
          runId,
          reason,
          // The Job goes with its pods (the API's default for Jobs would orphan them).
          remove: async () => {
            await cluster.batch.deleteNamespacedJob({ name, namespace: cluster.namespace, propagationPolicy: 'Background' });
          },
        });
      }
    } catch (error) {
      report.error = (error as Error).message;
    }
    reports.push(report);
  }
  return reports;
}
