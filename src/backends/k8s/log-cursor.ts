import { closeSync, fstatSync, readFileSync } from 'node:fs';
import { writeJsonAtomic } from '../../fs-atomic.js';
import { openLogForCopy, writeAllAt } from '../log-file.js';

/**
 * Copies a container's log, as the API serves it with `timestamps=true`
 * ("<RFC3339Nano> <line>\n" per line), into a local file, and keeps a
 * cursor beside it so that a copy resumed later (a dropped stream, another
 * process after a crash) writes every line exactly once.
 *
 * `sinceTime` only has second precision, so a resumed stream starts at the
 * cursor's second: lines before the cursor's timestamp are dropped, then as
 * many lines at exactly that timestamp as were already written, then, if the
 * file grew past what the cursor recorded (a writer died between writing
 * lines and saving the cursor), that many bytes of content.
 */
/** How often, at most, the cursor is saved while lines stream in. */
const CURSOR_SAVE_MS = 200;

export interface LogCursor {
  /** The pod whose log this is: a new pod (after an eviction) starts a new log. */
  pod: string;
  /** Timestamp of the last line written, as [seconds, nanoseconds]. */
  ts: [number, number] | null;
  /** Lines written with exactly that timestamp. */
  sameTs: number;
  /** The file's size once those lines were written. */
  bytes: number;
}

export function readCursor(path: string): LogCursor | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as LogCursor;
  } catch {
    // Not saved yet, or torn by a crash: the copy starts afresh. One that cannot be read cannot be rewritten either: that write's failure is reported.
    return undefined;
  }
}

/** "2026-11-22T23:59:59.123456789Z" -> [seconds, nanoseconds]; Go trims trailing zeros of the fraction. */
export function parseTimestamp(text: string): [number, number] | undefined {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!m) return undefined;
  const seconds = Date.parse(`${m[1]}${m[3]}`) / 1000;
  if (!Number.isFinite(seconds)) return undefined;
  return [seconds, Number((m[2] ?? '').padEnd(9, '0'))];
}

function compare(a: [number, number], b: [number, number]): number {
  return a[0] - b[0] || a[1] - b[1];
}

/** The `sinceTime` to resume from: the cursor's second (the API truncates to seconds anyway). */
export function resumeSince(cursor: LogCursor | undefined, pod: string): string | undefined {
  if (!cursor || cursor.pod !== pod || cursor.ts === null) return undefined;
  return new Date(cursor.ts[0] * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
}

/**
 * One copy of one pod's log into `logPath`. Feed it the stream's chunks with
 * `push`; it writes whole lines only (a partial line waits for its end or
 * for `flush`), and saves the cursor after each batch.
 */
export class TimestampedLogCopy {
  private readonly fd: number;
  /** Where the next byte goes: the file's size when the copy began, then on (log-file.ts: two copies at once write the same bytes in the same places). */
  private at: number;
  private cursor: LogCursor;
  private skipLines: number;
  private skipBytes: number;
  private pending: Buffer[] = [];
  /** Line contents not written yet (written once per pushed chunk). */
  private out: Buffer[] = [];
  private dirty = false;
  private savedAt = 0;
  private readonly resumeFrom: [number, number] | null;

  constructor(
    logPath: string,
    private readonly cursorPath: string,
    pod: string,
  ) {
    this.fd = openLogForCopy(logPath);
    const size = fstatSync(this.fd).size;
    this.at = size;
    const saved = readCursor(cursorPath);
    if (saved && saved.pod === pod) {
      this.cursor = saved;
      this.resumeFrom = saved.ts;
      this.skipLines = saved.sameTs;
      this.skipBytes = Math.max(0, size - saved.bytes);
    } else {
      // A new pod: its log starts after whatever is in the file. That is saved before any line is written: a writer
      // that dies between its first lines and its first save leaves a cursor that says where this pod's log began, so
      // the next copy skips what was written (without it, the next copy took those lines for an older pod's and
      // wrote them again).
      this.cursor = { pod, ts: null, sameTs: 0, bytes: size };
      this.resumeFrom = null;
      this.skipLines = 0;
      this.skipBytes = 0;
      writeJsonAtomic(cursorPath, this.cursor, 'none');
    }
  }

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl + 1);
      // Only a line that spans chunks is copied together (a long line is not re-scanned per chunk).
      const raw = this.pending.length === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.pending = [];
      this.line(raw);
      start = nl + 1;
    }
    if (start < chunk.length) this.pending.push(chunk.subarray(start));
    this.write(false);
  }

  /** The stream ended: a last line without a newline is written as it is. */
  flush(): void {
    if (this.pending.length > 0) this.line(Buffer.concat(this.pending));
    this.pending = [];
    this.write(true);
  }

  /** Writes what is buffered and saves the cursor; the copy cannot be used after. The file is closed even when that fails. */
  close(): void {
    try {
      this.write(true);
    } finally {
      closeSync(this.fd);
    }
  }

  /**
   * Writes the lines gathered so far in one write, then the cursor: at most
   * every CURSOR_SAVE_MS unless `force` (a cursor behind the file is safe:
   * a resumed copy skips the extra bytes).
   */
  private write(force: boolean): void {
    if (this.out.length > 0) {
      const data = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out);
      writeAllAt(this.fd, data, this.at);
      this.at += data.length;
      this.out = [];
    }
    if (!this.dirty || (!force && Date.now() - this.savedAt < CURSOR_SAVE_MS)) return;
    this.cursor.bytes = this.at;
    writeJsonAtomic(this.cursorPath, this.cursor, 'none');
    this.savedAt = Date.now();
    this.dirty = false;
  }

  /** Handles one "<ts> <content>" line; true when it wrote something. */
  private line(raw: Buffer): boolean {
    const space = raw.indexOf(32);
    const ts = space === -1 ? undefined : parseTimestamp(raw.subarray(0, space).toString('latin1'));
    if (!ts) return false; // not a log line (the API's own words): never copied into the user's log
    let content = raw.subarray(space + 1);
    if (this.resumeFrom) {
      const order = compare(ts, this.resumeFrom);
      if (order < 0) return false;
      if (order === 0 && this.skipLines > 0) {
        this.skipLines--;
        return false;
      }
    }
    if (this.skipBytes > 0) {
      const n = Math.min(this.skipBytes, content.length);
      this.skipBytes -= n;
      content = content.subarray(n);
    }
    if (content.length > 0) this.out.push(content);
    this.dirty = true;
    this.cursor = {
      pod: this.cursor.pod,
      ts,
      sameTs: this.cursor.ts !== null && compare(this.cursor.ts, ts) === 0 ? this.cursor.sameTs + 1 : 1,
      bytes: this.cursor.bytes, // set from the file's size when the cursor is saved
    };
    return true;
  }
}
