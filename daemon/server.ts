import { randomUUID } from 'node:crypto';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type Server, type Socket } from 'node:net';
import { JSONRPCErrorException, JSONRPCServer, type JSONRPCResponse } from 'json-rpc-2.0';
import { ErrorCode, QwexError, toQwexError } from '../src/errors.js';
import { LogFollower } from '../src/log-follower.js';
import { RunFiles } from '../src/paths.js';
import {
  Method,
  Notification,
  PROTOCOL_VERSION,
  RpcErrorCode,
  type LogDataParams,
  type LogEndParams,
  type LogEndReason,
  type MethodName,
  type Params,
  type Results,
} from '../src/protocol.js';
import { describeParamsError, ParamSchemas } from '../src/protocol-schemas.js';
import { LineReader } from '../src/rpc/framing.js';
import { isTerminal, type Run } from '../src/run/model.js';
import type { RunStore } from '../src/store/run-store.js';
import { VERSION } from '../src/version.js';
import type { DaemonLog } from './log.js';
import type { Supervisor } from '../src/run/supervisor.js';

/** Above this many unsent bytes, a subscription waits for the client to read (backpressure). */
const SUBSCRIPTION_HIGH_WATER = 1024 * 1024;
/** A client whose unsent replies pass this is not reading at all: it is disconnected. */
const CONNECTION_HARD_LIMIT = 64 * 1024 * 1024;

interface Subscription {
  id: string;
  runId: string;
  dir: string;
  followers: LogFollower[];
  abort: AbortController;
  done: Promise<void>;
}

class Connection {
  readonly subscriptions = new Map<string, Subscription>();
  private closed = false;

  constructor(
    readonly id: number,
    readonly socket: Socket,
  ) {}

  get isClosed(): boolean {
    return this.closed || this.socket.destroyed;
  }

  /** Sends one message line. Resolves once it is below the high-water mark again (for log data). */
  send(message: unknown): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    this.socket.write(`${JSON.stringify(message)}\n`);
    if (this.socket.writableLength > CONNECTION_HARD_LIMIT) {
      this.socket.destroy(new Error('client is not reading'));
      return Promise.resolve();
    }
    if (this.socket.writableLength <= SUBSCRIPTION_HIGH_WATER) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  markClosed(): void {
    this.closed = true;
  }
}

type Handlers = { [M in MethodName]: (params: Params[M], connection: Connection) => Promise<Results[M]> | Results[M] };

/**
 * The JSON-RPC side of qwexd: a Unix socket server, newline-delimited JSON,
 * one handler per method of the protocol table and nothing else.
 */
export class RpcServer {
  // The library's default error listener prints to the console; errors are answered and logged here instead.
  private readonly rpc = new JSONRPCServer<Connection>({ errorListener: () => {} });
  private readonly connections = new Set<Connection>();
  private server: Server | undefined;
  private nextConnectionId = 1;
  private readonly startedAt = new Date();

  constructor(
    private readonly options: {
      socketPath: string;
      store: RunStore;
      supervisor: Supervisor;
      log: DaemonLog;
      onShutdown: () => void;
    },
  ) {
    this.register(this.handlers());
    // Anything a handler throws becomes a JSON-RPC error; a QwexError keeps its code in `data`.
    this.rpc.mapErrorToJSONRPCErrorResponse = (id, error: unknown) => {
      if (error instanceof JSONRPCErrorException) return { jsonrpc: '2.0', id, error: error.toObject() };
      const qe = toQwexError(error);
      if (qe.code === ErrorCode.Internal) this.options.log.error('handler-error', { message: qe.message, stack: (error as Error).stack });
      return { jsonrpc: '2.0', id, error: { code: RpcErrorCode.QwexError, message: qe.message, data: qe.toJSON() } };
    };
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = createServer((socket) => this.accept(socket));
      server.once('error', reject);
      server.listen(this.options.socketPath, () => {
        server.off('error', reject);
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
    for (const c of this.connections) subscriptions += c.subscriptions.size;
    return { connections: this.connections.size, subscriptions };
  }

  /** Stops accepting, ends every subscription with `daemon-shutdown`, closes connections. */
  async close(): Promise<void> {
    const closing = new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await Promise.all(
      [...this.connections].flatMap((c) => [...c.subscriptions.values()].map((s) => this.endSubscription(c, s, 'daemon-shutdown'))),
    );
    for (const c of this.connections) {
      c.markClosed();
      c.socket.end();
    }
    await Promise.race([closing, new Promise((r) => setTimeout(r, 1000))]);
    for (const c of this.connections) c.socket.destroy();
  }

  private register(handlers: Handlers): void {
    for (const method of Object.values(Method)) {
      const handler = handlers[method] as (params: unknown, connection: Connection) => unknown;
      const schema = ParamSchemas[method];
      this.rpc.addMethod(method, async (raw: unknown, connection: Connection) => {
        const parsed = schema.safeParse(raw);
        if (!parsed.success) {
          throw new JSONRPCErrorException(`invalid params for ${method}: ${describeParamsError(parsed.error)}`, RpcErrorCode.InvalidParams);
        }
        return handler(parsed.data, connection);
      });
    }
  }

  private accept(socket: Socket): void {
    const connection = new Connection(this.nextConnectionId++, socket);
    this.connections.add(connection);
    const reader = new LineReader(
      (line) => {
        this.rpc.receiveJSON(line, connection).then(
          (response: JSONRPCResponse | JSONRPCResponse[] | null) => {
            if (response !== null && !(Array.isArray(response) && response.length === 0)) void connection.send(response);
          },
          (error: unknown) => this.options.log.error('receive-error', { message: (error as Error).message }),
        );
      },
      (error) => {
        // The rest of the line cannot be parsed; say why, then close.
        void connection.send({ jsonrpc: '2.0', id: null, error: { code: RpcErrorCode.InvalidRequest, message: error.message } });
        connection.markClosed();
        socket.end();
      },
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      connection.markClosed();
      this.connections.delete(connection);
      for (const sub of connection.subscriptions.values()) void this.endSubscription(connection, sub, 'unsubscribed');
    });
  }

  private handlers(): Handlers {
    const { store, supervisor } = this.options;
    return {
      'qwex.hello': (params) => {
        if (params.protocolVersion !== PROTOCOL_VERSION) {
          throw new JSONRPCErrorException(
            `protocol version ${params.protocolVersion} is not supported (qwexd ${VERSION} speaks ${PROTOCOL_VERSION})`,
            RpcErrorCode.VersionMismatch,
            { protocolVersion: PROTOCOL_VERSION, daemonVersion: VERSION },
          );
        }
        return { protocolVersion: PROTOCOL_VERSION, daemonVersion: VERSION, pid: process.pid };
      },
      'run.submit': (params) => ({ runs: supervisor.submit(params.project, params.jobs, params.env, params.provenance) }),
      'run.cancel': async (params) => {
        const { dir } = store.resolve(params.id);
        return { run: await supervisor.cancel(dir, params.graceMs) };
      },
      'run.get': (params) => supervisor.view(store.resolve(params.id).dir),
      'run.list': async (params) => ({ runs: await supervisor.list(params) }),
      'logs.subscribe': (params, connection) => this.subscribe(connection, params),
      'logs.unsubscribe': async (params, connection) => {
        const sub = connection.subscriptions.get(params.subscription);
        if (!sub) throw new QwexError(ErrorCode.Usage, `no subscription ${params.subscription} on this connection`);
        await this.endSubscription(connection, sub, 'unsubscribed');
        return { ok: true as const };
      },
      'daemon.status': () => {
        const counts = this.counts();
        return {
          version: VERSION,
          protocolVersion: PROTOCOL_VERSION,
          pid: process.pid,
          startedAt: this.startedAt.toISOString(),
          uptimeMs: Date.now() - this.startedAt.getTime(),
          socket: this.options.socketPath,
          concurrency: supervisor.concurrency,
          runs: supervisor.counts(),
          ...counts,
        };
      },
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
  private subscribe(connection: Connection, params: Params['logs.subscribe']): Results['logs.subscribe'] {
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
            return connection.send({ jsonrpc: '2.0', method: Notification.logData, params: note });
          },
        }),
    );
    const sub: Subscription = { id, runId: run.id, dir, followers, abort, done: Promise.resolve() };
    connection.subscriptions.set(id, sub);
    // The reply must reach the client before the first notification of this subscription.
    setImmediate(() => {
      for (const f of followers) f.start();
      sub.done = this.followToEnd(connection, sub);
    });
    return { subscription: id, runId: run.id };
  }

  private async followToEnd(connection: Connection, sub: Subscription): Promise<void> {
    const final = await waitForEnd(this.options.supervisor, sub.dir, sub.abort.signal, () => this.options.supervisor.refresh(sub.dir));
    if (sub.abort.signal.aborted) return;
    await Promise.all(sub.followers.map((f) => f.finish()));
    if (!connection.subscriptions.has(sub.id)) return;
    connection.subscriptions.delete(sub.id);
    await this.sendEnd(connection, sub, 'run-ended', final);
  }

  private async endSubscription(connection: Connection, sub: Subscription, reason: LogEndReason): Promise<void> {
    if (!connection.subscriptions.delete(sub.id)) return;
    sub.abort.abort();
    await Promise.all(sub.followers.map((f) => f.dispose()));
    let run: Run;
    try {
      run = this.options.store.read(sub.dir);
    } catch {
      return;
    }
    await this.sendEnd(connection, sub, reason, run);
  }

  private sendEnd(connection: Connection, sub: Subscription, reason: LogEndReason, run: Run): Promise<void> {
    const note: LogEndParams = { subscription: sub.id, runId: sub.runId, reason, run };
    return connection.send({ jsonrpc: '2.0', method: Notification.logEnd, params: note });
  }
}

/** Resolves with the final record once the supervisor reports the run's end (or at once if it ended). */
function waitForEnd(supervisor: Supervisor, dir: string, signal: AbortSignal, read: () => Run | Promise<Run>): Promise<Run> {
  return new Promise((resolve) => {
    let settled = false;
    let unsubscribe: () => void = () => {};
    let timer: NodeJS.Timeout | undefined;
    const finish = (run: Run): void => {
      if (settled) return;
      settled = true;
      unsubscribe();
      if (timer) clearInterval(timer);
      resolve(run);
    };
    unsubscribe = supervisor.onRunEnd((endedDir, run) => {
      if (endedDir === dir) finish(run);
    });
    signal.addEventListener('abort', () => void Promise.resolve(read()).then(finish, () => {}));
    let checking = false;
    const check = async (): Promise<void> => {
      if (checking || settled) return;
      checking = true;
      try {
        const run = await read();
        if (isTerminal(run.status)) finish(run);
      } catch {
        // unreadable for a moment; the next check or event will do
      } finally {
        checking = false;
      }
    };
    // Runs not started by this daemon (direct mode) end without telling it: look now and then.
    timer = setInterval(() => void check(), 1000);
    timer.unref();
    void check();
  });
}
