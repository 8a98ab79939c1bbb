import { randomUUID } from 'node:crypto';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type Server, type Socket } from 'node:net';
import { ErrorCode, QwexError, redactSecrets } from '../src/errors.js';
import { LogFollower } from '../src/log-follower.js';
import { RunFiles } from '../src/paths.js';
import {
  Notification,
  PROTOCOL_VERSION,
  RpcErrorCode,
  type LogDataParams,
  type LogEndParams,
  type LogEndReason,
  type Params,
  type QwexNotifications,
  type Results,
} from '../src/protocol.js';
import { methods } from '../src/protocol-schemas.js';
import { bindHandlers, RpcEndpoint, RpcError, type EndpointConnection, type HandlersOf } from '../src/rpc/endpoint.js';
import { ndjsonTransport } from '../src/rpc/ndjson.js';
import type { Run } from '../src/run/model.js';
import { Watcher } from '../src/watcher.js';
import type { RunStore } from '../src/store/run-store.js';
import { VERSION } from '../src/version.js';
import type { DaemonLog } from './log.js';
import type { Supervisor } from '../src/run/supervisor.js';
import type { WorkflowManager } from '../src/workflow/manager.js';
import { runExtras } from '../src/workflow/recipe.js';

interface Subscription {
  id: string;
  runId: string;
  dir: string;
  followers: LogFollower[];
  abort: AbortController;
  done: Promise<void>;
}

/** What qwexd keeps per client connection: its log subscriptions. */
class Client {
  readonly subscriptions = new Map<string, Subscription>();

  constructor(readonly rpc: EndpointConnection<QwexNotifications>) {}
}

/**
 * The JSON-RPC side of qwexd: a Unix socket server binding the protocol
 * table (src/protocol-schemas.ts) to the supervisor. Envelope, batches,
 * limits and backpressure are the rpc endpoint's (src/rpc/endpoint.ts);
 * this file only binds handlers and owns log subscriptions.
 */
export class RpcServer {
  private readonly endpoint: RpcEndpoint<Client, QwexNotifications>;
  private readonly clients = new Set<Client>();
  private server: Server | undefined;
  private readonly startedAt = new Date();
  private readonly watcher: Watcher;

  constructor(
    private readonly options: {
      socketPath: string;
      store: RunStore;
      supervisor: Supervisor;
      workflows: WorkflowManager;
      log: DaemonLog;
      onShutdown: () => void;
    },
  ) {
    this.watcher = new Watcher(options.store);
    this.endpoint = new RpcEndpoint<Client, QwexNotifications>(
      { requests: bindHandlers(methods, this.handlers()) },
      {
        // A QwexError crosses the socket with its stable code; anything else is a bug: -32603, logged by the endpoint.
        mapError: (error) => (error instanceof QwexError ? { code: RpcErrorCode.QwexError, message: error.message, data: error.toJSON() } : undefined),
        redact: redactSecrets,
        log: (level, event, fields) => options.log.write(level, event, fields),
      },
    );
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      // Half-open: a client that ends its side after its last request (`printf ... | socat`) still gets the answers.
      const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
      server.once('error', reject);
      server.listen(this.options.socketPath, () => {
        server.off('error', reject);
        server.on('error', (error) => this.options.log.error('socket-server-error', { message: error.message }));
        try {
          chmodSync(this.options.socketPath, 0o600);
        } catch (error) {
          reject(error);
          return;
        }
        resolve();
      });
      this.server = server;
    });
  }

  counts(): { connections: number; subscriptions: number } {
    let subscriptions = 0;
    for (const c of this.clients) subscriptions += c.subscriptions.size;
    return { connections: this.clients.size, subscriptions };
  }

  /** Stops accepting, ends every subscription with `daemon-shutdown`, answers what is pending, closes connections. */
  async close(): Promise<void> {
    const closing = new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await Promise.all(
      [...this.clients].flatMap((c) =>
        [...c.subscriptions.values()].map((s) =>
          this.endSubscription(c, s, 'daemon-shutdown').catch((error: unknown) => this.options.log.error('unsubscribe-failed', { message: (error as Error).message })),
        ),
      ),
    );
    for (const c of this.clients) c.rpc.end();
    await Promise.race([closing, new Promise((r) => setTimeout(r, 1000))]);
    for (const c of this.clients) c.rpc.dispose();
  }

  private accept(socket: Socket): void {
    let client!: Client;
    const rpc = this.endpoint.serve(ndjsonTransport(socket), (connection) => (client = new Client(connection)));
    this.clients.add(client);
    rpc.onClose(() => {
      this.clients.delete(client);
      for (const sub of client.subscriptions.values()) {
        this.endSubscription(client, sub, 'unsubscribed').catch((error: unknown) =>
          this.options.log.error('unsubscribe-failed', { message: (error as Error).message }),
        );
      }
    });
  }

  private handlers(): HandlersOf<typeof methods, Client> {
    const { store, supervisor, workflows } = this.options;
    return {
      'qwex.hello': (params) => {
        if (params.protocolVersion !== PROTOCOL_VERSION) {
          throw new RpcError(
            RpcErrorCode.VersionMismatch,
            `protocol version ${params.protocolVersion} is not supported (qwexd ${VERSION} speaks ${PROTOCOL_VERSION})`,
            { protocolVersion: PROTOCOL_VERSION, daemonVersion: VERSION },
          );
        }
        return { protocolVersion: PROTOCOL_VERSION, daemonVersion: VERSION, pid: process.pid };
      },
      'run.submit': async (params) => {
        const runs = supervisor.submit(params.project, params.jobs, params.env, params.provenance, params.submissionId);
        workflows.submitted(runs, params.env);
        // Group commit: the new records are flushed together, and answered for only once durable.
        await store.flushCreated();
        return { runs };
      },
      'run.cancel': async (params) => {
        const { dir } = store.resolve(params.id);
        return { run: await supervisor.cancel(dir, params.graceMs) };
      },
      'run.get': async (params) => {
        const view = await supervisor.view(store.resolve(params.id).dir);
        return { ...view, ...(await runExtras(view.run, view.dir)) };
      },
      'run.list': async (params) => ({ runs: await supervisor.list(params) }),
      'logs.subscribe': (params, client) => this.subscribe(client, params),
      'logs.unsubscribe': async (params, client) => {
        const sub = client.subscriptions.get(params.subscription);
        if (!sub) throw new QwexError(ErrorCode.Usage, `no subscription ${params.subscription} on this connection`);
        await this.endSubscription(client, sub, 'unsubscribed');
        return { ok: true as const };
      },
      'workflow.submit': (params) => workflows.submit(params),
      'workflow.get': (params) => workflows.get(params),
      'workflow.list': (params) => ({ workflows: workflows.list(params) }),
      'workflow.cancel': (params) => workflows.cancel(params),
      'workflow.retry': ({ env, ...ref }) => workflows.retry(ref, env),
      'daemon.status': () => ({
        version: VERSION,
        protocolVersion: PROTOCOL_VERSION,
        pid: process.pid,
        startedAt: this.startedAt.toISOString(),
        uptimeMs: Date.now() - this.startedAt.getTime(),
        socket: this.options.socketPath,
        concurrency: supervisor.concurrency,
        runs: supervisor.counts(),
        ...this.counts(),
        pendingRequests: this.endpoint.pendingRequests,
      }),
      'daemon.shutdown': () => {
        setImmediate(() => this.options.onShutdown());
        return { ok: true as const };
      },
    };
  }

  /**
   * Replays each requested log from its offset, then streams new bytes as
   * they land, then sends logs.end once the run has ended and both logs are
   * drained. Every subscriber reads the same files, so several attachers see
   * the same bytes in the same order.
   */
  private subscribe(client: Client, params: Params<'logs.subscribe'>): Results<'logs.subscribe'> {
    const { dir } = this.options.store.resolve(params.id);
    const run = this.options.store.read(dir);
    const id = randomUUID();
    const streams = params.streams ?? ['stdout', 'stderr'];
    const abort = new AbortController();
    const followers = streams.map(
      (stream) =>
        new LogFollower(join(dir, stream === 'stdout' ? RunFiles.stdout : RunFiles.stderr), {
          offset: (stream === 'stdout' ? params.stdoutOffset : params.stderrOffset) ?? 0,
          onData: (chunk, offset) => {
            const note: LogDataParams = { subscription: id, runId: run.id, stream, offset, data: chunk.toString('base64') };
            return client.rpc.notify(Notification.logData, note);
          },
        }),
    );
    const sub: Subscription = { id, runId: run.id, dir, followers, abort, done: Promise.resolve() };
    client.subscriptions.set(id, sub);
    // The reply must reach the client before the first notification of this subscription.
    setImmediate(() => {
      for (const f of followers) f.start();
      sub.done = this.followToEnd(client, sub).catch((error: unknown) =>
        this.options.log.error('subscription-failed', { subscription: id, message: (error as Error).message }),
      );
    });
    return { subscription: id, runId: run.id };
  }

  private async followToEnd(client: Client, sub: Subscription): Promise<void> {
    // The same wait as every other follower's: run.json changes, checked through the supervisor.
    const final = await this.watcher.waitForEnd(sub.dir, { signal: sub.abort.signal, refresh: (d) => this.options.supervisor.refresh(d) });
    if (sub.abort.signal.aborted) return;
    await Promise.all(sub.followers.map((f) => f.finish()));
    if (!client.subscriptions.has(sub.id)) return;
    client.subscriptions.delete(sub.id);
    await this.sendEnd(client, sub, 'run-ended', final);
  }

  private async endSubscription(client: Client, sub: Subscription, reason: LogEndReason): Promise<void> {
    if (!client.subscriptions.delete(sub.id)) return;
    sub.abort.abort();
    await Promise.all(sub.followers.map((f) => f.dispose()));
    let run: Run;
    try {
      run = this.options.store.read(sub.dir);
    } catch (error) {
      // The end note carries the run: without a readable record (removed meanwhile) there is none to send.
      this.options.log.warn('log-end-unsent', { subscription: sub.id, runId: sub.runId, reason, message: (error as Error).message });
      return;
    }
    await this.sendEnd(client, sub, reason, run);
  }

  private sendEnd(client: Client, sub: Subscription, reason: LogEndReason, run: Run): Promise<void> {
    const note: LogEndParams = { subscription: sub.id, runId: sub.runId, reason, run };
    return client.rpc.notify(Notification.logEnd, note);
  }
}
