/**
 * Newline-delimited JSON framing for the qwexd socket: one JSON-RPC message
 * (or batch) per line. The reader enforces a maximum line length so that a
 * peer cannot make us buffer without bound.
 */
export const MAX_LINE_BYTES = 4 * 1024 * 1024;

export class LineTooLongError extends Error {
  constructor(readonly limit: number) {
    super(`message longer than ${limit} bytes`);
    this.name = 'LineTooLongError';
  }
}

/** Splits a byte stream into lines (without the '\n'); calls onLine for each, onError once if a line is too long. */
export class LineReader {
  private parts: Buffer[] = [];
  private size = 0;
  private failed = false;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly onError: (error: LineTooLongError) => void,
    private readonly maxBytes = MAX_LINE_BYTES,
  ) {}

  push(chunk: Buffer): void {
    if (this.failed) return;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      if (this.size + piece.length > this.maxBytes) return this.fail();
      this.parts.push(piece);
      const line = Buffer.concat(this.parts).toString('utf8');
      this.parts = [];
      this.size = 0;
      start = nl + 1;
      if (line.trim() !== '') this.onLine(line);
      if (this.failed) return;
    }
    const rest = chunk.subarray(start);
    if (rest.length === 0) return;
    if (this.size + rest.length > this.maxBytes) return this.fail();
    this.parts.push(Buffer.from(rest));
    this.size += rest.length;
  }

  private fail(): void {
    this.failed = true;
    this.parts = [];
    this.size = 0;
    this.onError(new LineTooLongError(this.maxBytes));
  }
}
