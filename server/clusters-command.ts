import type { ClusterInfo } from '../src/cloud/api.js';
import { listClusters } from './clusters.js';
import { loadServerConfig, type ConfigFlags } from './config.js';
import { openDatabase } from './db/connect.js';
import { migrateToLatest } from './db/migrate.js';

/**
 * `qwexcloud clusters [--json]`: each cluster of the configuration with its
 * health as the server last checked it (reason, since when, when checked),
 * Kueue's queue lengths and the server's pending and running runs there;
 * then clusters that only the history knows. Reads the database, whether
 * the server runs or not (GET /v1/clusters is the live view).
 */
export async function clustersCommand(flags: ConfigFlags & { json?: boolean }): Promise<number> {
  const config = loadServerConfig(flags);
  const database = await openDatabase(config.db);
  let clusters: ClusterInfo[];
  try {
    await migrateToLatest(database);
    clusters = await listClusters(database, config.targets);
  } finally {
    await database.close();
  }
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(clusters, null, 2)}\n`);
    return 0;
  }
  if (clusters.length === 0) {
    process.stderr.write('qwexcloud: no cluster targets are configured (targets with a Kubernetes backend)\n');
    return 0;
  }
  const rows = [
    ['NAME', 'BACKEND', 'HEALTH', 'SINCE', 'QUEUES (PENDING)', 'PENDING', 'RUNNING', 'LABELS', 'WEIGHT'],
    ...clusters.map((c) => [
      c.name,
      c.backend ?? '-',
      c.configured ? c.health : 'removed',
      c.since ?? '-',
      c.queues.map((q) => `${q.name} (${q.pending ?? '?'})`).join(', ') || '-',
      String(c.runs.pending),
      String(c.runs.running),
      Object.entries(c.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-',
      c.weight === null ? '-' : String(c.weight),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) process.stdout.write(`${r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
  for (const c of clusters.filter((x) => x.health === 'unhealthy' || !x.configured)) {
    process.stdout.write(`\n${c.name}: ${c.configured ? `unhealthy since ${c.since}: ${c.reason}` : `removed from the configuration; ${c.runs.total} run(s) in the history`}${c.checkedAt ? ` (checked ${c.checkedAt})` : ''}\n`);
  }
  return 0;
}
