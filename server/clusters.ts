import { findBackend } from '../src/backends/registry.js';
import type { ClusterInfo } from '../src/cloud/api.js';
import type { Target } from './config.js';
import type { Db } from './db/connect.js';
import type { ClusterProbe, QueueLength } from './clusters-probe.js';

export type Log = (level: 'info' | 'warn' | 'error', event: string, fields?: Record<string, unknown>) => void;

/** What the server knows of one cluster now. `healthy` is undefined until its first check. */
export interface ClusterState {
  healthy: boolean | undefined;
  reason: string | null;
  /** When it became what it is (healthy or not). */
  since: string | null;
  checkedAt: string | null;
  queues: QueueLength[];
}

/** Whether runs of a target are placed by a cluster's scheduler (a Kubernetes target): those have health and queues. */
export function isCluster(target: Pick<Target, 'backend'>): boolean {
  return findBackend(target.backend)?.traits.clusterScheduled === true;
}

/**
 * Watches the health of each cluster target: its API checked every
 * `intervalMs` (ClusterProbe), and the length of Kueue's queues there. A
 * cluster that cannot be reached is unhealthy from the first failed check,
 * with the reason and since when; new runs go elsewhere or wait (placement,
 * the dispatcher's admission), runs already there are followed by their
 * backend, which retries the API until it answers. Each check is written to
 * SQL (cluster_status) for `qwexcloud clusters`, and stays after the target
 * leaves the configuration.
 */
export class ClusterMonitor {
  private readonly states = new Map<string, ClusterState>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly listeners = new Set<(name: string, state: ClusterState) => void>();
  private readonly checking = new Map<string, Promise<void>>();
  private closed = false;

  constructor(
    private readonly options: { targets: readonly Target[]; probe: ClusterProbe; intervalMs: number; database: Db; log: Log },
  ) {
    for (const t of this.clusters()) this.states.set(t.name, { healthy: undefined, reason: null, since: null, checkedAt: null, queues: t.queues.map((name) => ({ name, pending: null })) });
  }

  /** Starts checking every cluster (the first checks at once, without waiting for them). */
  start(): void {
    for (const t of this.clusters()) void this.check(t);
  }

  state(name: string): ClusterState | undefined {
    return this.states.get(name);
  }

  /** Why new runs of this target must wait (its cluster is unhealthy), or undefined when they need not. */
  holdBack(name: string): string | undefined {
    const s = this.states.get(name);
    if (s?.healthy !== false) return undefined;
    return `cluster ${name} is unhealthy since ${s.since}: ${s.reason}`;
  }

  /** Kueue's pending workloads in a queue of a cluster, as of its last check (undefined when unknown). */
  pending(name: string, queue: string): number | undefined {
    const pending = this.states.get(name)?.queues.find((q) => q.name === queue)?.pending;
    return pending === null ? undefined : pending;
  }

  /** Checks one cluster (or all) now, without waiting for the next tick. */
  async checkNow(name?: string): Promise<void> {
    await Promise.all(this.clusters().filter((t) => name === undefined || t.name === name).map((t) => this.check(t)));
  }

  /** Called after each check whose health differs from the one before. Returns the unsubscribe. */
  onChange(listener: (name: string, state: ClusterState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    await Promise.allSettled([...this.checking.values()]);
    this.listeners.clear();
  }

  private clusters(): Target[] {
    return this.options.targets.filter(isCluster);
  }

  private check(target: Target): Promise<void> {
    const running = this.checking.get(target.name);
    if (running) return running;
    const task = this.checkOnce(target).finally(() => {
      this.checking.delete(target.name);
      if (this.closed) return;
      clearTimeout(this.timers.get(target.name));
      const timer = setTimeout(() => void this.check(target), this.options.intervalMs);
      timer.unref();
      this.timers.set(target.name, timer);
    });
    this.checking.set(target.name, task);
    return task;
  }

  private async checkOnce(target: Target): Promise<void> {
    const result = await this.options.probe.check(target).catch((error: unknown) => ({ ok: false as const, reason: (error as Error).message }));
    if (this.closed) return;
    const before = this.states.get(target.name)!;
    const now = new Date().toISOString();
    const healthy = result.ok;
    const changed = before.healthy !== healthy;
    const state: ClusterState = {
      healthy,
      reason: result.ok ? null : result.reason,
      since: changed || before.since === null ? now : before.since,
      checkedAt: now,
      // An unreachable cluster's queues are as they were last seen.
      queues: result.ok ? result.queues : before.queues,
    };
    this.states.set(target.name, state);
    if (changed) {
      if (healthy) this.options.log('info', before.healthy === false ? 'cluster-healthy-again' : 'cluster-healthy', { cluster: target.name });
      else this.options.log('warn', 'cluster-unhealthy', { cluster: target.name, reason: state.reason });
      for (const listener of this.listeners) listener(target.name, state);
    }
    await this.options.database.db
      .insertInto('cluster_status')
      .values({ name: target.name, healthy: healthy ? 1 : 0, reason: state.reason, since: state.since!, checked_at: now, queues: JSON.stringify(state.queues) })
      .onConflict((oc) => oc.column('name').doUpdateSet({ healthy: healthy ? 1 : 0, reason: state.reason, since: state.since!, checked_at: now, queues: JSON.stringify(state.queues) }))
      .execute()
      .catch((error: unknown) => this.options.log('warn', 'cluster-status-not-written', { cluster: target.name, message: (error as Error).message }));
  }
}

/** Each target's runs that are pending and running, from SQL (the server's own view of its queues). */
export async function runCounts(database: Db): Promise<Map<string, { pending: number; running: number; total: number }>> {
  const rows = await database.db
    .selectFrom('runs')
    .select((eb) => ['target', 'status', eb.fn.countAll<number | string | bigint>().as('n')])
    .groupBy(['target', 'status'])
    .execute();
  const counts = new Map<string, { pending: number; running: number; total: number }>();
  for (const row of rows) {
    const c = counts.get(row.target) ?? { pending: 0, running: 0, total: 0 };
    const n = Number(row.n);
    if (row.status === 'pending') c.pending += n;
    if (row.status === 'running') c.running += n;
    c.total += n;
    counts.set(row.target, c);
  }
  return counts;
}

/**
 * Every cluster: those configured (their health as `state` says, or as last
 * written to SQL when no monitor runs in this process: `qwexcloud clusters`),
 * then those that only the history knows (removed from the configuration,
 * their runs kept).
 */
export async function listClusters(database: Db, targets: readonly Target[], state?: (name: string) => ClusterState | undefined): Promise<ClusterInfo[]> {
  const counts = await runCounts(database);
  const stored = new Map((await database.db.selectFrom('cluster_status').selectAll().execute()).map((r) => [r.name, r]));
  const fromSql = (name: string): ClusterState | undefined => {
    const r = stored.get(name);
    return r && { healthy: Number(r.healthy) === 1, reason: r.reason, since: r.since, checkedAt: r.checked_at, queues: JSON.parse(r.queues) as QueueLength[] };
  };
  const configured = targets.filter(isCluster).map((t): ClusterInfo => {
    const s = state?.(t.name) ?? fromSql(t.name);
    return {
      name: t.name,
      backend: t.backend,
      configured: true,
      health: s?.healthy === undefined ? 'unknown' : s.healthy ? 'healthy' : 'unhealthy',
      reason: s?.reason ?? null,
      since: s?.since ?? null,
      checkedAt: s?.checkedAt ?? null,
      labels: t.labels,
      weight: t.weight,
      queues: s?.queues ?? t.queues.map((name) => ({ name, pending: null })),
      runs: counts.get(t.name) ?? { pending: 0, running: 0, total: 0 },
    };
  });
  const names = new Set(targets.map((t) => t.name));
  const removed = [...new Set([...stored.keys()])].filter((name) => !names.has(name)).map((name): ClusterInfo => {
    const s = fromSql(name)!;
    return { name, backend: null, configured: false, health: 'unknown', reason: 'no longer in the configuration', since: s.checkedAt, checkedAt: s.checkedAt, labels: {}, weight: null, queues: s.queues, runs: counts.get(name) ?? { pending: 0, running: 0, total: 0 } };
  });
  return [...configured, ...removed];
}
