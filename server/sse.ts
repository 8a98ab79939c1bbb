import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';

/** Between comments on an idle stream, so that proxies and load balancers keep it open. */
const HEARTBEAT_MS = 15_000;
/** A client that lets this much pile up unread is cut: it resumes with Last-Event-ID, the server holds no more for it. */
const MAX_BUFFERED = 4 * 1024 * 1024;

/**
 * One Server-Sent Events response. `send` resolves once the event is handed
 * to the socket's buffer below its high-water mark (a caller that awaits it
 * never reads ahead of a slow client); it resolves false once the stream is
 * closed.
 */
export class SseStream {
  private closedFlag = false;
  private readonly closeListeners = new Set<() => void>();

  constructor(readonly raw: ServerResponse) {
    raw.on('close', () => this.markClosed());
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  async send(event: string, data: string, id?: string | number): Promise<boolean> {
    if (this.closedFlag) return false;
    const lines = data.split('\n').map((line) => `data: ${line}\n`).join('');
    const ok = this.raw.write(`${id === undefined ? '' : `id: ${id}\n`}event: ${event}\n${lines}\n`);
    if (this.raw.writableLength > MAX_BUFFERED) {
      this.close();
      return false;
    }
    if (!ok) await this.drained();
    return !this.closedFlag;
  }

  comment(text: string): void {
    if (!this.closedFlag) this.raw.write(`: ${text}\n\n`);
  }

  /** Called once, when the stream closes (either side). Returns the unsubscribe. */
  onClose(listener: () => void): () => void {
    if (this.closedFlag) {
      listener();
      return () => {};
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  close(): void {
    if (!this.raw.writableEnded) this.raw.end();
    this.markClosed();
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.raw.off('drain', done);
        off();
        resolve();
      };
      const off = this.onClose(done);
      this.raw.once('drain', done);
    });
  }

  private markClosed(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const listener of [...this.closeListeners]) listener();
    this.closeListeners.clear();
  }
}

/** Every open event stream of the server: one heartbeat timer for all, and all closed at shutdown. */
export class SseStreams {
  private readonly open = new Set<SseStream>();
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.timer = setInterval(() => {
      for (const stream of this.open) stream.comment('keep-alive');
    }, HEARTBEAT_MS);
    this.timer.unref();
  }

  get size(): number {
    return this.open.size;
  }

  /** Takes the response over from Fastify and starts the event stream. */
  start(reply: FastifyReply): SseStream {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      // nginx would otherwise buffer the stream and nothing would arrive live.
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
    });
    raw.flushHeaders();
    const stream = new SseStream(raw);
    this.open.add(stream);
    stream.onClose(() => this.open.delete(stream));
    return stream;
  }

  closeAll(): void {
    clearInterval(this.timer);
    for (const stream of [...this.open]) stream.close();
  }
}
