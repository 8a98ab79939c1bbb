import { Duplex } from 'node:stream';

/**
 * Two connected in-memory streams (a stand-in for a socket pair, for testing
 * the rpc layer without one): what one end writes, the other reads, with
 * backpressure; end() on one is end-of-stream on the other, and so is
 * destroying it (as a socket's peer sees when it closes), after what was
 * already sent. Node 22 has stream.duplexPair; Node 20 does not.
 */
export function memoryDuplexPair(): [Duplex, Duplex] {
  const a = new MemoryEnd();
  const b = new MemoryEnd();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

class MemoryEnd extends Duplex {
  peer!: MemoryEnd;
  /** The peer's write waiting for this end to want more. */
  private blockedWrite: (() => void) | undefined;

  override _read(): void {
    const resume = this.blockedWrite;
    this.blockedWrite = undefined;
    resume?.();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.peer.destroyed) return callback(new Error('the other end is closed'));
    if (this.peer.push(chunk)) callback();
    else this.peer.blockedWrite = () => callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.push(null);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.peer.destroyed && !this.peer.readableEnded) this.peer.push(null);
    callback(error);
  }
}
