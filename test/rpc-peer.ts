import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { until } from './helpers.js';

/** Counts messages as they arrive, over every peer of the process: which came first. */
let arrivals = 0;

/** A raw JSON-RPC peer over any stream (a Unix socket, an in-memory pair): sends lines as given, parses the lines it gets. */
export class LinePeer {
  private buffer = '';
  /** Messages not yet taken by next(). */
  readonly messages: unknown[] = [];
  /** Every message received, with its place in the arrival order of all peers. */
  readonly received: { seq: number; message: unknown }[] = [];
  closed = false;

  constructor(readonly stream: Duplex) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) !== -1) {
        const message: unknown = JSON.parse(this.buffer.slice(0, nl));
        this.messages.push(message);
        this.received.push({ seq: ++arrivals, message });
        this.buffer = this.buffer.slice(nl + 1);
      }
    });
    stream.on('close', () => (this.closed = true));
    stream.on('end', () => (this.closed = true));
    stream.on('error', () => {});
  }

  static socket(path: string): Promise<LinePeer> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new LinePeer(s)));
      s.once('error', reject);
    });
  }

  send(...lines: string[]): void {
    for (const line of lines) this.stream.write(`${line}\n`);
  }

  /** The next `count` messages, in the order they came. */
  async next(count = 1, timeoutMs = 10_000): Promise<unknown[]> {
    await until(() => (this.messages.length >= count ? true : undefined), timeoutMs, `${count} message(s), got ${this.messages.length}`);
    return this.messages.splice(0, count);
  }

  /** Sends a line and returns the one message that answers it. */
  async ask(line: string): Promise<unknown> {
    this.send(line);
    return (await this.next(1))[0];
  }

  close(): void {
    this.stream.destroy();
  }
}

/** Batch answers may come in any order (spec section 6): sorted by their JSON text to compare as sets. */
export function asSet(answers: unknown): string[] {
  if (!Array.isArray(answers)) throw new Error(`expected a batch answer (an array), got ${JSON.stringify(answers)}`);
  return answers.map((a) => JSON.stringify(sortKeys(a))).sort();
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, sortKeys(v)]));
}
