import type { Duplex } from 'node:stream';
import { Emitter } from './events.js';
import { LineReader, MAX_LINE_BYTES } from './framing.js';
import type { MessageReader, MessageWriter } from './transport.js';

/** Above this many unsent bytes, write() makes its caller wait (a log subscription pauses; a request holds its slot). */
export const WRITE_HIGH_WATER_BYTES = 1024 * 1024;
/**
 * A peer that leaves this much unread is not reading at all: the stream is
 * destroyed. Room for a few answers of the largest size (endpoint.ts
 * MAX_RESPONSE_BYTES) to a client that does read.
 */
export const WRITE_HARD_LIMIT_BYTES = 128 * 1024 * 1024;

export interface NdjsonOptions {
  maxLineBytes?: number;
  highWaterBytes?: number;
  hardLimitBytes?: number;
}

export interface Transport {
  reader: MessageReader;
  writer: MessageWriter;
}

/**
 * Newline-delimited JSON over any Duplex (a Unix socket, an in-memory pair):
 * one message per line, UTF-8, in both directions. The transport owns the
 * stream: disposing either half destroys it.
 */
export function ndjsonTransport(stream: Duplex, options: NdjsonOptions = {}): Transport {
  // An error is followed by 'close'; what it was matters only to whoever destroyed the stream.
  stream.on('error', () => {});
  return {
    reader: new NdjsonReader(stream, options.maxLineBytes ?? MAX_LINE_BYTES),
    writer: new NdjsonWriter(stream, options.highWaterBytes ?? WRITE_HIGH_WATER_BYTES, options.hardLimitBytes ?? WRITE_HARD_LIMIT_BYTES),
  };
}

/** An event that fires once, when the first of `events` is emitted by the stream. */
function onceOf(stream: Duplex, events: string[]): Emitter<void> {
  const emitter = new Emitter<void>();
  let fired = false;
  const fire = (): void => {
    if (fired) return;
    fired = true;
    for (const e of events) stream.off(e, fire);
    try {
      emitter.fire();
    } finally {
      emitter.clear();
    }
  };
  for (const e of events) stream.on(e, fire);
  return emitter;
}

class NdjsonReader implements MessageReader {
  private readonly errors = new Emitter<Error>();
  // 'end': the peer will send nothing more (it may still read what we answer); 'close': the stream is gone.
  private readonly closed: Emitter<void>;
  private listening = false;
  readonly onError = this.errors.event;
  readonly onClose: MessageReader['onClose'];

  constructor(
    private readonly stream: Duplex,
    private readonly maxLineBytes: number,
  ) {
    this.closed = onceOf(stream, ['end', 'close']);
    this.onClose = this.closed.event;
  }

  listen(callback: (message: string) => void): void {
    if (this.listening) throw new Error('listen() was called twice on one reader');
    this.listening = true;
    const lines = new LineReader(callback, (error) => this.errors.fire(error), this.maxLineBytes);
    this.stream.on('data', (chunk: Buffer | string) => lines.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
  }

  pause(): void {
    this.stream.pause();
  }

  resume(): void {
    if (this.listening) this.stream.resume();
  }

  dispose(): void {
    this.errors.clear();
    this.stream.destroy();
  }
}

class NdjsonWriter implements MessageWriter {
  readonly onClose: MessageWriter['onClose'];

  constructor(
    private readonly stream: Duplex,
    private readonly highWater: number,
    private readonly hardLimit: number,
  ) {
    this.onClose = onceOf(stream, ['close']).event;
  }

  get closed(): boolean {
    return this.stream.destroyed || this.stream.writableEnded || this.stream.closed;
  }

  write(message: string): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.stream.write(`${message}\n`);
    if (this.stream.writableLength > this.hardLimit) {
      this.stream.destroy(new Error(`the peer left more than ${this.hardLimit} bytes unread`));
      return Promise.resolve();
    }
    if (this.stream.writableLength <= this.highWater) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.stream.off('drain', done);
        this.stream.off('close', done);
        resolve();
      };
      this.stream.on('drain', done);
      this.stream.on('close', done);
    });
  }

  /** Ends the write side, and once what was written is flushed, the stream: whoever ends has stopped reading too. */
  end(): void {
    if (this.closed) return;
    this.stream.once('finish', () => this.stream.destroy());
    this.stream.end();
  }

  dispose(): void {
    this.stream.destroy();
  }
}
