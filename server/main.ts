import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ContentStore } from '../src/workspace/snapshot.js';
import { buildApp } from './app.js';
import { BlobStore } from './blob-store.js';
import { ChangeFeed } from './change-feed.js';
import { loadServerConfig, type ServerConfig } from './config.js';
import { openDatabase, type Db } from './db/connect.js';
import { migrateToLatest } from './db/migrate.js';
import { createDispatcher } from './dispatch.js';
import { LogWatchers } from './log-tail.js';
import { RunService } from './run-service.js';
import { SqlRunsSource } from './runs-source-sql.js';
import { SseStreams } from './sse.js';
import { TokenStore } from './tokens.js';
import { ClusterMonitor, runCounts } from './clusters.js';
import { KubernetesProbe } from './clusters-probe.js';
import { ServerNotifications } from './notify.js';
import { place } from './placement.js';

/** A cluster last checked longer ago than this is checked again before a run is placed on it. */
const FRESH_CHECK_MS = 1000;

/** Where things live in the data directory. */
export function dataLayout(data: string): { state: string; store: string; runs: string; logs: string } {
  const state = join(data, 'state');
  return { state, store: join(state, 'store'), runs: join(data, 'runs'), logs: join(data, 'logs') };
}

export interface RunningServer {
  url: string;
  app: FastifyInstance;
  /** Stops accepting, ends event streams, stops supervising (runs go on), closes the database. Idempotent. */
  close(): Promise<void>;
}

interface Assembled {
  app: FastifyInstance;
  runs: RunService;
  database: Db;
  monitor: ClusterMonitor;
  notifications: ServerNotifications;
  close(): Promise<void>;
}

/** Opens the database (migrated) and builds every service and the app, listening nowhere yet. */
async function assemble(config: ServerConfig, logStream?: NodeJS.WritableStream): Promise<Assembled> {
  const layout = dataLayout(config.data);
  for (const dir of [config.data, layout.state, layout.runs, layout.logs]) mkdirSync(dir, { recursive: true, mode: 0o700 });
  // qwex's own run machinery (the index, the content store the Runner and the k8s backend read) lives in the data directory.
  process.env.QWEX_STATE_DIR = layout.state;

  const closers: (() => Promise<void> | void)[] = [];
  const closeAll = async (): Promise<void> => {
    for (const close of closers.reverse()) await close();
    closers.length = 0;
  };
  try {
    const database = await openDatabase(config.db);
    closers.push(() => database.close());
    await migrateToLatest(database);
    // Set once built; the supervision may log before that.
    let app: FastifyInstance | undefined = undefined;
    const log = (level: 'info' | 'warn' | 'error', event: string, fields: Record<string, unknown> = {}): void => {
      app?.log[level]({ event, ...fields }, event);
    };
    const blobs = new BlobStore(new ContentStore(layout.store), database);
    const monitor = new ClusterMonitor({ targets: config.targets, probe: new KubernetesProbe(), intervalMs: config.clusterCheckMs, database, log });
    closers.push(() => monitor.close());
    const dispatcher = createDispatcher({
      runsRoot: layout.runs,
      indexFile: join(layout.state, 'index.db'),
      logFile: join(layout.logs, 'dispatch.log'),
      concurrency: config.concurrency,
      log,
      holdBack: (owner) => monitor.holdBack(owner.target),
    });
    // Runs held back for a cluster start as soon as it answers again.
    monitor.onChange((_name, state) => {
      if (state.healthy) dispatcher.poke();
    });
    let notifications: ServerNotifications | undefined = undefined;
    const runs = new RunService({
      database,
      dispatcher,
      blobs,
      targets: config.targets,
      log,
      policy: {
        place: async (_principal, request) => {
          const counts = await runCounts(database);
          const choose = (): ReturnType<typeof place> =>
            place(config.targets, request, {
              healthy: (t) => monitor.state(t.name)?.healthy !== false,
              pending: (t, queue) => Math.max((queue === undefined ? undefined : monitor.pending(t.name, queue)) ?? 0, counts.get(t.name)?.pending ?? 0),
              running: (t) => counts.get(t.name)?.running ?? 0,
            });
          const chosen = choose();
          // A cluster not checked for a moment is checked now: a run sent to one that just went away would fail to start.
          const state = monitor.state(chosen.name);
          if (state?.healthy === true && Date.now() - Date.parse(state.checkedAt ?? '') > FRESH_CHECK_MS) {
            await monitor.checkNow(chosen.name);
            if (monitor.state(chosen.name)?.healthy === false) return choose();
          }
          return chosen;
        },
        prepare: (principal, request, job) => {
          const spec = notifications?.requestedSpec(principal.user, request.notify);
          if (spec) job.notify = spec;
        },
      },
    });
    closers.push(() => runs.close());
    notifications = new ServerNotifications({ database, runs, config: config.notify, log });
    const notifier = notifications;
    closers.push(() => notifier.close());
    const watchers = new LogWatchers();
    closers.push(() => watchers.close());
    const streams = new SseStreams();
    closers.push(() => streams.closeAll());
    const source = new SqlRunsSource(runs, blobs);
    const feed = new ChangeFeed(source);
    closers.push(() => feed.close());
    app = await buildApp(config, { runs, source, blobs, tokens: new TokenStore(database), streams, watchers, feed, limits: config.limits, clusters: { monitor, database }, notifications }, logStream);
    const built = app;
    closers.push(() => built.close());
    let closing: Promise<void> | undefined;
    return { app, runs, database, monitor, notifications, close: () => (closing ??= closeAll()) };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/**
 * Starts qwexcloud: migrates the database, re-adopts the runs an earlier
 * server left active, then listens. Everything opened here is closed by
 * `close()`, in the reverse order.
 */
export async function startServer(config: ServerConfig, options: { logStream?: NodeJS.WritableStream } = {}): Promise<RunningServer> {
  const assembled = await assemble(config, options.logStream);
  const { app, runs, database, monitor, notifications } = assembled;
  try {
    monitor.start();
    await runs.start();
    notifications.start();
    const address = await app.listen({ host: config.listen.host, port: config.listen.port });
    app.log.info({ event: 'ready', url: address, targets: config.targets.map((t) => `${t.name} (${t.backend})`), db: database.where, data: config.data }, 'ready');
    return { url: address, app, close: () => assembled.close() };
  } catch (error) {
    await assembled.close();
    throw error;
  }
}

/** The OpenAPI document of this version's API, built from the routes' own schemas (on a scratch SQLite database). */
export async function openApiDocument(): Promise<unknown> {
  const scratch = mkdtempSync(join(tmpdir(), 'qwexcloud-openapi-'));
  try {
    const config = loadServerConfig({ data: scratch, db: `sqlite:${join(scratch, 'qwexcloud.db')}` }, {});
    const assembled = await assemble({ ...config, logLevel: 'silent' });
    try {
      await assembled.app.ready();
      return assembled.app.swagger();
    } finally {
      await assembled.close();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
