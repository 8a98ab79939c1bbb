import { connect, type Socket } from 'node:net';
import { JSONRPCClient, type JSONRPCResponse } from 'json-rpc-2.0';
import { ErrorCode, QwexError, type ErrorCode as ErrorCodeType } from './errors.js';
import { socketPath } from './paths.js';
import { Method, PROTOCOL_VERSION, RpcErrorCode, type MethodName, type Params, type Results } from './protocol.js';
import { LineReader } from './rpc/framing.js';

export interface NotificationMessage {
  method: string;
  params: unknown;
}

/**
 * A connection to qwexd. Requests are typed by the protocol table; errors
 * come back as the same QwexError (code, message, hint) that direct mode
 * would throw. The owner calls close().
 */
export class DaemonClient {
  private readonly rpc: JSONRPCClient;
  private readonly listeners = new Set<(note: NotificationMessage) => void>();
  private closedError: QwexError | undefined;
  daemonVersion = '';
  daemonPid = 0;

  private constructor(private readonly socket: Socket) {
    this.rpc = new JSONRPCClient((request) => {
      if (this.closedError) return Promise.reject(this.closedError);
      socket.write(`${JSON.stringify(request)}\n`);
      return Promise.resolve();
    });
    const reader = new LineReader(
      (line) => this.onLine(line),
      (error) => this.fail(new QwexError(ErrorCode.DaemonUnavailable, `qwexd sent ${error.message}`)),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => this.fail(new QwexError(ErrorCode.DaemonUnavailable, 'qwexd closed the connection', {
      hint: '`qwex daemon status` says whether it is running; `qwex daemon logs` shows why it stopped',
    })));
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
    const client = new DaemonClient(socket);
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

  async request<M extends MethodName>(method: M, params: Params[M]): Promise<Results[M]> {
    try {
      return (await this.rpc.request(method, params)) as Results[M];
    } catch (error) {
      throw this.toQwexError(error);
    }
  }

  /** Listens to server notifications (log data, log end). Returns a function that stops listening. */
  onNotification(listener: (note: NotificationMessage) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.fail(new QwexError(ErrorCode.DaemonUnavailable, 'the connection to qwexd was closed'));
    this.socket.destroy();
  }

  private onLine(line: string): void {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      return this.fail(new QwexError(ErrorCode.DaemonUnavailable, 'qwexd sent a line that is not JSON'));
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (typeof item !== 'object' || item === null) continue;
      if ('method' in item) {
        for (const listener of this.listeners) listener(item as NotificationMessage);
      } else {
        this.rpc.receive(item as JSONRPCResponse);
      }
    }
  }

  private fail(error: QwexError): void {
    if (this.closedError) return;
    this.closedError = error;
    this.rpc.rejectAllPendingRequests(error.message);
  }

  private toQwexError(error: unknown): QwexError {
    if (error instanceof QwexError) return error;
    const rpcError = error as { code?: number; message?: string; data?: { code?: string; message?: string; hint?: string; details?: Record<string, unknown> } };
    if (rpcError.code === RpcErrorCode.QwexError && rpcError.data?.code) {
      return new QwexError(rpcError.data.code as ErrorCodeType, rpcError.data.message ?? rpcError.message ?? 'qwexd error', {
        ...(rpcError.data.hint ? { hint: rpcError.data.hint } : {}),
        ...(rpcError.data.details ? { details: rpcError.data.details } : {}),
      });
    }
    if (rpcError.code === RpcErrorCode.VersionMismatch) {
      return new QwexError(ErrorCode.ProtocolMismatch, `qwexd speaks another protocol version: ${rpcError.message}`, {
        hint: 'restart it so that it matches this qwex: `qwex daemon stop && qwex daemon start`',
      });
    }
    if (this.closedError) return this.closedError;
    return new QwexError(ErrorCode.Internal, `qwexd: ${rpcError.message ?? String(error)}`);
  }
}
