import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ErrorCode, QwexError, type ErrorCode as ErrorCodeType } from './errors.js';
import { socketPath } from './paths.js';
import { Method, PROTOCOL_VERSION, RpcErrorCode, type MethodName, type NotificationName, type NotificationParams, type Params, type QwexNotifications, type QwexRequests, type Results } from './protocol.js';
import { type ConnectionClosedError, RpcConnection, RpcResponseError, type NotificationOf } from './rpc/connection.js';
import type { Disposable } from './rpc/events.js';
import { ndjsonTransport } from './rpc/ndjson.js';

/** A notification from qwexd, typed by its method: `if (note.method === Notification.logData) note.params.offset`. */
export type NotificationMessage = NotificationOf<QwexNotifications>;

/**
 * A connection to qwexd. Requests are typed by the protocol table; errors
 * come back as the same QwexError (code, message, hint) that direct mode
 * would throw. The owner calls close(). Loads no zod (see protocol.ts).
 */
export class DaemonClient {
  private readonly connection: RpcConnection<QwexRequests, QwexNotifications>;
  daemonVersion = '';
  daemonPid = 0;

  private constructor(stream: Duplex) {
    this.connection = new RpcConnection(ndjsonTransport(stream), {
      peer: 'qwexd',
      closedHint: '`qwex daemon status` says whether it is running; `qwex daemon logs` shows why it stopped',
    });
  }

  /** Connects and checks the protocol version. Throws QWEX_DAEMON_UNAVAILABLE when nothing listens. */
  static async connect(path = socketPath(), options: { client?: string } = {}): Promise<DaemonClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    }).catch((error: NodeJS.ErrnoException) => {
      throw new QwexError(ErrorCode.DaemonUnavailable, `qwexd is not running (${error.code ?? error.message} on ${path})`, {
        hint: 'start it with `qwex daemon start`; without it qwex runs in direct mode',
        cause: error,
      });
    });
    return DaemonClient.over(socket, options);
  }

  /** Speaks the protocol over any stream (a socket, an in-memory pair): says hello and checks the version. */
  static async over(stream: Duplex, options: { client?: string } = {}): Promise<DaemonClient> {
    const client = new DaemonClient(stream);
    try {
      const hello = await client.request(Method.hello, { protocolVersion: PROTOCOL_VERSION, client: options.client ?? 'qwex' });
      client.daemonVersion = hello.daemonVersion;
      client.daemonPid = hello.pid;
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  }

  /** Connects if qwexd is running; undefined when it is not (the caller falls back to direct mode). */
  static async connectIfRunning(path = socketPath()): Promise<DaemonClient | undefined> {
    if (process.env.QWEX_NO_DAEMON === '1') return undefined;
    try {
      return await DaemonClient.connect(path);
    } catch (error) {
      if (error instanceof QwexError && error.code === ErrorCode.DaemonUnavailable) return undefined;
      throw error;
    }
  }

  async request<M extends MethodName>(method: M, params: Params<M>): Promise<Results<M>> {
    try {
      return await this.connection.request(method, params);
    } catch (error) {
      throw toQwexError(error);
    }
  }

  /** Listens to one notification method (typed params), or with only a listener to all of them. */
  onNotification<N extends NotificationName>(method: N, listener: (params: NotificationParams<N>) => void): Disposable;
  onNotification(listener: (note: NotificationMessage) => void): Disposable;
  onNotification(a: NotificationName | ((note: NotificationMessage) => void), b?: (params: never) => void): Disposable {
    if (typeof a === 'function') return this.connection.onNotification(a);
    return this.connection.onNotification(a, b as (params: unknown) => void);
  }

  /** The connection ended: qwexd went away, or close() was called. */
  onClose(listener: (error: ConnectionClosedError) => void): Disposable {
    return this.connection.onClose(listener);
  }

  /** Ends the connection; requests still pending reject with ConnectionDisposedError (QWEX_DAEMON_UNAVAILABLE). */
  close(): void {
    this.connection.dispose();
  }
}

/** The QwexError a failed request means for the caller: qwexd's own error, intact, or what went wrong with the connection. */
function toQwexError(error: unknown): QwexError {
  if (error instanceof QwexError) return error;
  if (!(error instanceof RpcResponseError)) return new QwexError(ErrorCode.Internal, `qwexd: ${(error as Error).message ?? String(error)}`, { cause: error });
  const data = (error.data ?? {}) as { code?: string; message?: string; hint?: string; details?: Record<string, unknown> };
  switch (error.code) {
    case RpcErrorCode.QwexError:
      if (!data.code) break;
      return new QwexError(data.code as ErrorCodeType, data.message ?? error.message, {
        ...(data.hint ? { hint: data.hint } : {}),
        ...(data.details ? { details: data.details } : {}),
      });
    case RpcErrorCode.VersionMismatch:
      return new QwexError(ErrorCode.ProtocolMismatch, `qwexd speaks another protocol version: ${error.message}`, {
        hint: 'restart it so that it matches this qwex: `qwex daemon stop && qwex daemon start`',
      });
    case RpcErrorCode.ResponseTooLarge:
      // The message says what to ask for instead.
      return new QwexError(ErrorCode.Usage, error.message);
    case RpcErrorCode.InternalError:
      return new QwexError(ErrorCode.Internal, `qwexd: internal error${typeof error.data === 'string' ? `: ${error.data}` : ''}`, {
        hint: '`qwex daemon logs` has the details',
      });
  }
  return new QwexError(ErrorCode.Internal, `qwexd: ${error.message}${typeof error.data === 'string' ? ` (${error.data})` : ''}`);
}
