import { closeSync, fstatSync } from 'node:fs';
import { openLogForCopy, writeAllAt } from '../log-file.js';

/**
 * Copies a container's output from the engine into the run's stdout.log and
 * stderr.log. The engine keeps a container's whole output (json-file log
 * driver), so a copy can always start over from the beginning: it skips as
 * many bytes of each stream as the local file already holds, which makes a
 * resumed copy (after qwexd or a monitor died) exact, with nothing lost or
 * written twice; it writes at offsets (log-file.ts), so two copies at once
 * write the same bytes in the same places.
 *
 * The engine sends non-TTY output multiplexed: frames of an 8-byte header
 * (stream type, 3 zero bytes, big-endian length) and the payload. The
 * demultiplexer here is iterative and keeps at most one partial frame:
 * docker-modem's demuxStream recurses once per frame and copies its whole
 * buffer on every chunk, which a burst of short lines turns into a deep stack.
 */
export class ContainerLogCopy {
  private readonly fds: [number, number];
  /** Bytes of each stream still to skip (already in the local file). */
  private readonly skip: [number, number];
  /** Where the next byte of each stream goes. */
  private readonly at: [number, number];
  private pending: Buffer = Buffer.alloc(0);
  private closed = false;

  constructor(stdoutPath: string, stderrPath: string) {
    const out = openLogForCopy(stdoutPath);
    let err: number;
    try {
      err = openLogForCopy(stderrPath);
    } catch (error) {
      closeSync(out);
      throw error;
    }
    this.fds = [out, err];
    this.skip = [fstatSync(out).size, fstatSync(err).size];
    this.at = [...this.skip];
  }

  /** Feeds a chunk of the multiplexed stream. Writes are synchronous: after close() nothing more is written. */
  push(chunk: Buffer): void {
    if (this.closed) return;
    let buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let at = 0;
    while (buf.length - at >= 8) {
      const type = buf[at]!;
      const size = buf.readUInt32BE(at + 4);
      if (buf.length - at - 8 < size) break;
      const payload = buf.subarray(at + 8, at + 8 + size);
      at += 8 + size;
      if (type === 1 || type === 2) this.write(type === 1 ? 0 : 1, payload);
    }
    buf = buf.subarray(at);
    // Keep a copy only of the partial frame, not of the chunk it came in.
    this.pending = buf.length === 0 ? Buffer.alloc(0) : Buffer.from(buf);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fds) closeSync(fd);
  }

  private write(stream: 0 | 1, payload: Buffer): void {
    let data = payload;
    const skip = this.skip[stream];
    if (skip > 0) {
      const n = Math.min(skip, data.length);
      this.skip[stream] = skip - n;
      data = data.subarray(n);
    }
    writeAllAt(this.fds[stream], data, this.at[stream]);
    this.at[stream] += data.length;
  }
}
