import { ErrorCode, QwexError } from '../errors.js';
import { disposable, Emitter, type Disposable } from './events.js';
import { MAX_LINE_BYTES } from './framing.js';
import { classifyRequest, ErrorCodes, ErrorMessages, errorResponse, isResponse, type ResponseError } from './messages.js';
import type { Transport } from './ndjson.js';

/**
 * The client side of JSON-RPC 2.0 over a reader/writer pair, typed by the
 * protocol it speaks: requests out (typed params and result), notifications
 * in both directions. Loads no schema library: the peer is trusted to send
 * what the protocol says, and the server checks what we send.
 *
 * Correlation (ids, pending requests) is hand-written rather than taken from
 * json-rpc-2.0's JSONRPCClient: that one settles pending requests on close
 * with a code-0 error response the caller cannot tell from a server's error,
 * and its receive() throws on a batch member that is null.
 */
export type RequestMap = Record<string, { params: unknown; result: unknown }>;
export type NotificationMap = Record<string, unknown>;

/** A notification of a map, as one discriminated union: `{ method, params }`. */
export type NotificationOf<N extends NotificationMap> = { [K in keyof N & string]: { method: K; params: N[K] } }[keyof N & string];

/** The peer answered a request with a JSON-RPC error. */
export class RpcResponseError extends Error {
  readonly code: number;
  readonly data: unknown;

  constructor(error: ResponseError) {
    super(error.message);
    this.name = 'RpcResponseError';
    this.code = error.code;
    this.data = error.data;
  }
}

/** The connection ended (the peer closed it, or sent something unreadable); what was pending is rejected with this. */
export class ConnectionClosedError extends QwexError {
  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(ErrorCode.DaemonUnavailable, message, options);
    this.name = 'ConnectionClosedError';
  }
}

/** This side disposed the connection; what was pending is rejected with this. */
export class ConnectionDisposedError extends ConnectionClosedError {
  constructor(peer: string) {
    super(`the connection to ${peer} was closed by this side`);
    this.name = 'ConnectionDisposedError';
  }
}

export interface ConnectionOptions {
  /** Who is at the other end, for messages ("qwexd"). */
  peer?: string;
  /** Added to the error when the peer closes the connection. */
  closedHint?: string;
  /** The longest message the peer reads; a longer request is refused here instead of closing the connection there. */
  maxMessageBytes?: number;
}

interface Pending {
  method: string;
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
}

export class RpcConnection<Requests extends RequestMap, Incoming extends NotificationMap, Outgoing extends NotificationMap = Record<never, never>>
  implements Disposable
{
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedError: ConnectionClosedError | undefined;
  private readonly notifications = new Emitter<NotificationOf<Incoming>>();
  private readonly closeEmitter = new Emitter<ConnectionClosedError>();
  private readonly peer: string;
  private readonly maxMessageBytes: number;

  constructor(
    private readonly transport: Transport,
    options: ConnectionOptions = {},
  ) {
    this.peer = options.peer ?? 'the peer';
    this.maxMessageBytes = options.maxMessageBytes ?? MAX_LINE_BYTES;
    const closedByPeer = (): void =>
      this.close(new ConnectionClosedError(`${this.peer} closed the connection`, options.closedHint ? { hint: options.closedHint } : {}));
    transport.reader.onError((error) => {
      this.close(new ConnectionClosedError(`${this.peer} sent a ${error.message}`, { cause: error }));
      transport.writer.dispose();
    });
    transport.reader.onClose(closedByPeer);
    transport.writer.onClose(closedByPeer);
    transport.reader.listen((text) => this.receive(text));
  }

  /** True once the connection has ended; requests then reject at once. */
  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /**
   * Sends a request and resolves with its result. Rejects with
   * RpcResponseError for an error answer, ConnectionClosedError when the
   * connection ends first (ConnectionDisposedError if this side ended it).
   */
  request<M extends keyof Requests & string>(method: M, params: Requests[M]['params']): Promise<Requests[M]['result']> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    let text: string;
    try {
      text = JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    const bytes = Buffer.byteLength(text);
    if (bytes > this.maxMessageBytes) {
      return Promise.reject(
        new QwexError(ErrorCode.Usage, `the ${method} request is ${bytes} bytes, over the ${this.maxMessageBytes} bytes one message to ${this.peer} may hold`, {
          hint: 'split it into smaller requests',
        }),
      );
    }
    return new Promise((resolve, reject) => {
      this.pending.set(id, { method, resolve, reject });
      void this.transport.writer.write(text);
    });
  }

  /** Sends a notification (no answer comes). Resolves once the transport can take more. */
  notify<N extends keyof Outgoing & string>(method: N, params: Outgoing[N]): Promise<void> {
    if (this.closedError) return Promise.reject(this.closedError);
    return this.transport.writer.write(JSON.stringify({ jsonrpc: '2.0', method, ...(params === undefined ? {} : { params }) }));
  }

  /** Listens to one notification method, or (with only a listener) to all of them. Listeners must not throw. */
  onNotification<N extends keyof Incoming & string>(method: N, listener: (params: Incoming[N]) => void): Disposable;
  onNotification(listener: (note: NotificationOf<Incoming>) => void): Disposable;
  onNotification(a: string | ((note: NotificationOf<Incoming>) => void), b?: (params: never) => void): Disposable {
    if (typeof a === 'function') return this.notifications.event(a);
    const listener = b as (params: unknown) => void;
    return this.notifications.event((note) => {
      if (note.method === a) listener(note.params);
    });
  }

  /** The connection ended, with the error pending requests were rejected with. */
  onClose(listener: (error: ConnectionClosedError) => void): Disposable {
    if (this.closedError) {
      listener(this.closedError);
      return disposable(() => {});
    }
    return this.closeEmitter.event(listener);
  }

  /** Ends the connection: pending requests reject with ConnectionDisposedError. Idempotent. */
  dispose(): void {
    this.close(new ConnectionDisposedError(this.peer));
    this.transport.writer.dispose();
  }

  private receive(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      this.close(new ConnectionClosedError(`${this.peer} sent a line that is not JSON`));
      this.transport.writer.dispose();
      return;
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (isResponse(item)) {
        this.settle(item.id, 'error' in item ? { error: item.error } : { result: item.result });
        continue;
      }
      const classified = classifyRequest(item);
      if (classified.kind === 'notification') {
        try {
          this.notifications.fire(classified.message as unknown as NotificationOf<Incoming>);
        } catch (error) {
          // A throwing listener is a bug of its own; it must not stop this message's other members from being handled.
          queueMicrotask(() => {
            throw error;
          });
        }
      } else if (classified.kind === 'request') {
        // This side serves no methods.
        const { id, method } = classified.message;
        void this.transport.writer.write(JSON.stringify(errorResponse(id, ErrorCodes.MethodNotFound, ErrorMessages[ErrorCodes.MethodNotFound], `no method "${method}" on this side`)));
      }
    }
  }

  private settle(id: unknown, outcome: { result: unknown } | { error: ResponseError }): void {
    if (typeof id !== 'number') return;
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    if ('error' in outcome) pending.reject(new RpcResponseError(outcome.error));
    else pending.resolve(outcome.result);
  }

  private close(error: ConnectionClosedError): void {
    if (this.closedError) return;
    this.closedError = error;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(error);
    try {
      this.closeEmitter.fire(error);
    } finally {
      this.closeEmitter.clear();
      this.notifications.clear();
    }
  }
}
