import { setImmediate as nextTurnOfEventLoop } from 'node:timers/promises';
import { JSONRPCErrorException, JSONRPCServer, type JSONRPCResponse } from 'json-rpc-2.0';
import { disposable, Emitter, type Disposable } from './events.js';
import { DEFAULT_LIMITS, RpcError, describeParamsError, type EndpointOptions, type Limits, type LogFn, type MethodTable, type NotificationSpec } from './method-table.js';
import { classifyRequest, ErrorCodes, ErrorMessages, errorResponse, ServerErrorCodes, type RequestId, type ResponseError, type ResponseMessage } from './messages.js';
import type { Transport } from './ndjson.js';

export { bindHandlers, DEFAULT_LIMITS, describeParamsError, RpcError, type EndpointOptions, type HandlersOf, type Limits, type LogFn, type MethodTable, type NotificationSpec, type RequestSpec, type SchemaTable } from './method-table.js';

/**
 * The server side of JSON-RPC 2.0: one method table, served over any number
 * of reader/writer pairs. qwex checks the envelope, runs batches and applies
 * the limits itself; json-rpc-2.0's JSONRPCServer dispatches each single,
 * already valid request to its handler (method lookup, -32601, turning a
 * thrown error into an error response), which is the part it gets right.
 * See docs/protocol.md for what the package does wrong and why.
 */

type NotificationMap = Record<string, unknown>;

/** One peer being served. The endpoint owns it; the context's owner may send notifications and end it. */
export interface EndpointConnection<Notes extends NotificationMap = NotificationMap> {
  readonly id: number;
  /** Members received and not yet answered. */
  readonly pending: number;
  /** True once nothing more can be sent to the peer. */
  readonly closed: boolean;
  /** Sends a notification; resolves once the transport can take more (backpressure), never rejects. */
  notify<N extends keyof Notes & string>(method: N, params: Notes[N]): Promise<void>;
  /** The connection is gone (both directions). */
  onClose(listener: () => void): Disposable;
  /** Stops reading, answers what was already received, then closes. */
  end(): void;
  /** Closes at once; answers not yet sent are dropped. */
  dispose(): void;
}

interface Member {
  answer: ResponseMessage | undefined;
  method: string | undefined;
}

export class RpcEndpoint<C, Notes extends NotificationMap = NotificationMap> {
  private readonly limits: Limits;
  private readonly dispatcher = new JSONRPCServer<C>({ errorListener: () => {} });
  private readonly notifications: Map<string, NotificationSpec<unknown, C>>;
  private readonly whenTooLarge = new Map<string, string>();
  private readonly connections = new Set<ServedConnection<C, Notes>>();
  private nextId = 1;

  constructor(
    table: MethodTable<C>,
    private readonly options: EndpointOptions = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.notifications = new Map(Object.entries(table.notifications ?? {}));
    for (const [name, spec] of Object.entries(table.requests)) {
      if (spec.whenTooLarge) this.whenTooLarge.set(name, spec.whenTooLarge);
      this.dispatcher.addMethod(name, async (raw: unknown, context: C) => {
        const parsed = spec.params.safeParse(raw);
        if (!parsed.success) throw new JSONRPCErrorException(`invalid params for ${name}: ${describeParamsError(parsed.error)}`, ErrorCodes.InvalidParams);
        try {
          return await spec.handler(parsed.data, context);
        } catch (error) {
          const e = this.toResponseError(error, name);
          throw new JSONRPCErrorException(e.message, e.code, e.data);
        }
      });
    }
    this.dispatcher.handleMethodNotFound = (request) =>
      Promise.resolve(
        request.id === undefined ? null : (errorResponse(request.id, ErrorCodes.MethodNotFound, ErrorMessages[ErrorCodes.MethodNotFound], `no method "${request.method}"`) as JSONRPCResponse),
      );
  }

  /** Members received and not yet answered, over all connections. */
  get pendingRequests(): number {
    let n = 0;
    for (const c of this.connections) n += c.pending;
    return n;
  }

  /**
   * Serves one peer over a reader/writer pair. `context` is made once for
   * the connection and handed to every handler it calls.
   */
  serve(transport: Transport, context: (connection: EndpointConnection<Notes>) => C): EndpointConnection<Notes> {
    const connection = new ServedConnection<C, Notes>(this.nextId++, transport, this.limits);
    connection.context = context(connection);
    this.connections.add(connection);
    connection.onClose(() => this.connections.delete(connection));
    transport.reader.onError((error) => {
      // The rest of the line cannot be read: say why, then close once what came before it is answered.
      void connection.write(JSON.stringify(errorResponse(null, ErrorCodes.InvalidRequest, error.message)));
      connection.end();
    });
    transport.reader.listen((text) => {
      this.receive(connection, text).catch((error: unknown) => this.log('error', 'rpc-receive-failed', errorFields(error, this.options.redact)));
    });
    return connection;
  }

  private async receive(connection: ServedConnection<C, Notes>, text: string): Promise<void> {
    if (connection.isEnding) return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      await connection.write(JSON.stringify(errorResponse(null, ErrorCodes.ParseError, ErrorMessages[ErrorCodes.ParseError])));
      return;
    }
    if (!Array.isArray(value)) {
      connection.accepted(1);
      try {
        const member = await this.member(connection, value);
        if (member.answer) await connection.write(this.serialize([member]));
      } finally {
        connection.answered(1);
      }
      return;
    }
    if (value.length === 0) {
      await connection.write(JSON.stringify(errorResponse(null, ErrorCodes.InvalidRequest, ErrorMessages[ErrorCodes.InvalidRequest], 'an empty batch')));
      return;
    }
    if (value.length > this.limits.maxBatchMembers) {
      const message = `batch too large (at most ${this.limits.maxBatchMembers} members, this one has ${value.length})`;
      await connection.write(JSON.stringify(errorResponse(null, ErrorCodes.InvalidRequest, message)));
      return;
    }
    const count = value.length;
    connection.accepted(count);
    try {
      // Members start one at a time, each after a turn of the event loop (ServedConnection.slot): other connections are served in between.
      const members = await Promise.all((value as unknown[]).map((item) => this.member(connection, item)));
      const answered = members.filter((m) => m.answer !== undefined);
      // A batch of notifications only is answered with nothing at all.
      if (answered.length > 0) await connection.write(this.serialize(answered, true));
    } finally {
      connection.answered(count);
    }
  }

  /** Checks, then runs, one message or batch member; its answer, or none for a notification. */
  private async member(connection: ServedConnection<C, Notes>, value: unknown): Promise<Member> {
    const classified = classifyRequest(value);
    if (classified.kind === 'invalid') {
      return { answer: errorResponse(null, ErrorCodes.InvalidRequest, ErrorMessages[ErrorCodes.InvalidRequest], classified.reason), method: undefined };
    }
    const { method } = classified.message;
    const release = await connection.slot();
    if (!release) return { answer: undefined, method };
    try {
      if (classified.kind === 'notification') {
        await this.notification(connection, method, classified.message.params);
        return { answer: undefined, method };
      }
      const request = classified.message;
      let answer: ResponseMessage;
      try {
        answer = ((await this.dispatcher.receive(request, connection.context)) as ResponseMessage | null) ?? this.internalError(request.id, method, new Error('no answer'));
      } catch (error) {
        answer = this.internalError(request.id, method, error);
      }
      return { answer, method };
    } finally {
      release();
    }
  }

  /** A notification from the peer: run its handler; nothing is ever answered (section 4.1), so problems are only logged. */
  private async notification(connection: ServedConnection<C, Notes>, method: string, raw: unknown): Promise<void> {
    const spec = this.notifications.get(method);
    // Logged once per connection: a peer sending many must not fill the log.
    if (!spec) {
      if (connection.firstIgnored()) this.log('debug', 'rpc-notification-ignored', { method, connection: connection.id });
      return;
    }
    const parsed = spec.params.safeParse(raw);
    if (!parsed.success) {
      if (connection.firstIgnored()) this.log('debug', 'rpc-notification-invalid', { method, connection: connection.id, problem: describeParamsError(parsed.error) });
      return;
    }
    try {
      await spec.handler(parsed.data, connection.context);
    } catch (error) {
      this.log('error', 'rpc-notification-failed', { method, ...errorFields(error, this.options.redact) });
    }
  }

  private toResponseError(error: unknown, method: string): ResponseError {
    if (error instanceof RpcError) return error.toJSON();
    return this.options.mapError?.(error) ?? this.internalError(null, method, error).error;
  }

  private internalError(id: RequestId, method: string, error: unknown): ResponseMessage & { error: ResponseError } {
    const fields = errorFields(error, this.options.redact);
    this.log('error', 'rpc-handler-error', { method, ...fields });
    return errorResponse(id, ErrorCodes.InternalError, ErrorMessages[ErrorCodes.InternalError], fields.message) as ResponseMessage & { error: ResponseError };
  }

  /**
   * The line for a message's answer, or a batch's. An answer that would not
   * fit (or that V8 cannot even build as a string) becomes an error saying
   * what to ask for instead; in a batch, so does each member that would
   * take the line over the limit.
   */
  private serialize(members: Member[], batch = false): string {
    const max = this.limits.maxResponseBytes;
    let budget = batch ? max - 2 : max;
    const texts: string[] = [];
    for (const { answer, method } of members) {
      if (!answer) continue;
      let text: string;
      try {
        text = JSON.stringify(answer);
        const bytes = Buffer.byteLength(text);
        if (bytes > budget) text = JSON.stringify(this.tooLarge(answer.id, method, bytes, batch && bytes <= max));
      } catch (error) {
        text = JSON.stringify(isStringTooLong(error) ? this.tooLarge(answer.id, method, undefined, false) : this.internalError(answer.id, method ?? '?', error));
      }
      budget -= Buffer.byteLength(text) + 1;
      texts.push(text);
    }
    return batch ? `[${texts.join(',')}]` : (texts[0] ?? '');
  }

  private tooLarge(id: RequestId, method: string | undefined, bytes: number | undefined, aloneWouldFit: boolean): ResponseMessage {
    const limit = this.limits.maxResponseBytes;
    const size = bytes === undefined ? 'too large to build' : `${bytes} bytes`;
    const hint = aloneWouldFit
      ? 'send this request on its own or in a smaller batch'
      : `ask for less${method && this.whenTooLarge.has(method) ? `: ${this.whenTooLarge.get(method)}` : ''}`;
    this.log('warn', 'rpc-response-too-large', { method, bytes, limit });
    return errorResponse(id, ServerErrorCodes.ResponseTooLarge, `the answer to ${method ?? 'this request'} is ${size}, over the ${limit} bytes one message may hold; ${hint}`, {
      limit,
      ...(bytes === undefined ? {} : { bytes }),
      hint,
    });
  }

  private log(level: Parameters<LogFn>[0], event: string, fields: Record<string, unknown>): void {
    try {
      this.options.log?.(level, event, fields);
    } catch {
      // logging must never take the server down
    }
  }
}

class ServedConnection<C, Notes extends NotificationMap> implements EndpointConnection<Notes> {
  context!: C;
  private pendingCount = 0;
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly closeEmitter = new Emitter<void>();
  private ending = false;
  private readEnded = false;
  private ignoredNotification = false;
  /** Set when the transport is gone: members not started yet are dropped. */
  private gone = false;
  /** Settles when the member that last asked for a slot has started (or given up): the next one waits for it. */
  private lastStart: Promise<void> = Promise.resolve();

  constructor(
    readonly id: number,
    private readonly transport: Transport,
    private readonly limits: Limits,
  ) {
    transport.writer.onClose(() => {
      this.gone = true;
      for (const wake of this.waiting.splice(0)) wake();
      this.closeEmitter.fire();
      this.closeEmitter.clear();
    });
    transport.reader.onClose(() => {
      // The peer sends nothing more, but may still read: answer what it sent, then close.
      this.readEnded = true;
      this.endIfIdle();
    });
  }

  get pending(): number {
    return this.pendingCount;
  }

  get closed(): boolean {
    return this.gone || this.transport.writer.closed;
  }

  notify<N extends keyof Notes & string>(method: N, params: Notes[N]): Promise<void> {
    return this.write(JSON.stringify({ jsonrpc: '2.0', method, params }));
  }

  onClose(listener: () => void): Disposable {
    if (this.gone) {
      listener();
      return disposable(() => {});
    }
    return this.closeEmitter.event(listener);
  }

  write(text: string): Promise<void> {
    return this.transport.writer.write(text);
  }

  end(): void {
    this.ending = true;
    // Keep reading (and dropping) what the peer still sends, so that its writes complete and it sees our end.
    this.transport.reader.resume();
    this.endIfIdle();
  }

  /** True the first time only: whether to log a notification that is not run. */
  firstIgnored(): boolean {
    if (this.ignoredNotification) return false;
    this.ignoredNotification = true;
    return true;
  }

  /** After end(): messages still coming are dropped. */
  get isEnding(): boolean {
    return this.ending;
  }

  dispose(): void {
    this.transport.writer.dispose();
  }

  accepted(count: number): void {
    this.pendingCount += count;
    // Members waiting to start are not read from the peer again until they have: the peer's writes block instead.
    if (this.pendingCount > this.limits.maxInFlight) this.transport.reader.pause();
  }

  answered(count: number): void {
    this.pendingCount -= count;
    if (this.pendingCount <= this.limits.maxInFlight) this.transport.reader.resume();
    this.endIfIdle();
  }

  /**
   * Waits until every member asked for before this one has started, then
   * for a turn of the event loop (so that other connections are read and
   * answered between any two members of this one), then for one of this
   * connection's maxInFlight slots. Resolves with the slot's release, or
   * with undefined when the connection went away meanwhile.
   */
  async slot(): Promise<(() => void) | undefined> {
    const previous = this.lastStart;
    let markStarted!: () => void;
    this.lastStart = new Promise<void>((resolve) => (markStarted = resolve));
    try {
      await previous;
      await nextTurnOfEventLoop();
      while (this.running >= this.limits.maxInFlight && !this.gone) await new Promise<void>((resolve) => this.waiting.push(resolve));
      if (this.gone) return undefined;
      this.running++;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        this.running--;
        this.waiting.shift()?.();
      };
    } finally {
      markStarted();
    }
  }

  private endIfIdle(): void {
    if ((this.ending || this.readEnded) && this.pendingCount === 0) this.transport.writer.end();
  }
}

function isStringTooLong(error: unknown): boolean {
  return error instanceof RangeError && /string length/i.test(error.message);
}

function errorFields(error: unknown, redact: ((text: string) => string) | undefined): { message: string; stack?: string } {
  const r = redact ?? ((t: string) => t);
  if (error instanceof Error) return { message: r(error.message), ...(error.stack ? { stack: r(error.stack) } : {}) };
  return { message: r(String(error)) };
}
