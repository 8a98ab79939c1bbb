import type { Disposable } from './events.js';

/**
 * The two halves a JSON-RPC connection is built over, as in vscode-jsonrpc:
 * the protocol core (endpoint.ts, connection.ts) knows nothing about sockets;
 * a binding (ndjson.ts) implements these over a stream. A message is the
 * text of one JSON value; parsing and serialising stay in the core, where
 * their errors have JSON-RPC meanings (-32700, a result too large to send).
 */
export interface MessageReader extends Disposable {
  /** Starts delivering messages to `callback`, in order. Called once. */
  listen(callback: (message: string) => void): void;
  /** A message that cannot be delivered (longer than the limit): nothing more is delivered after it. */
  readonly onError: (listener: (error: Error) => void) => Disposable;
  /** The peer will send nothing more: it ended its side, or the stream is gone. Fires once. */
  readonly onClose: (listener: () => void) => Disposable;
  /** Flow control: stop taking messages from the peer until resume(); messages already read are still delivered. */
  pause(): void;
  resume(): void;
}

export interface MessageWriter extends Disposable {
  /**
   * Sends one message. Resolves once the transport can take more (the
   * caller's backpressure), or once it has closed: it never rejects, and a
   * message written after close is dropped.
   */
  write(message: string): Promise<void>;
  /** Sends what is buffered, then closes the transport (the caller reads no more). */
  end(): void;
  /** True once nothing more can be sent. */
  readonly closed: boolean;
  /** The transport is gone (both directions). Fires once. */
  readonly onClose: (listener: () => void) => Disposable;
}
