import { randomBytes } from 'node:crypto';
import { FeedEvent, type CloudRun } from '../src/cloud/api.js';
import type { RunsSource } from './runs-source.js';
import type { SseStream } from './sse.js';
import type { Principal } from './tokens.js';

/** How many recent changes are kept for followers that reconnect. */
const KEPT = 2048;

interface Subscriber {
  principal: Principal;
  stream: SseStream;
}

/**
 * The change feed behind GET /v1/events: every run change, once it is in
 * SQL, to every subscriber allowed to see that run. Event ids are
 * `<server instance>-<sequence>`; a subscriber that reconnects with
 * Last-Event-ID gets what it missed from the last KEPT changes, or a
 * `reset` (refetch the list) when that is not enough or the server restarted.
 */
export class ChangeFeed {
  private readonly instance = randomBytes(4).toString('hex');
  private sequence = 0;
  private readonly recent: { seq: number; run: CloudRun }[] = [];
  private readonly subscribers = new Set<Subscriber>();
  private readonly unsubscribe: () => void;

  constructor(source: Pick<RunsSource, 'onChange'>) {
    this.unsubscribe = source.onChange((run) => this.publish(run));
  }

  get size(): number {
    return this.subscribers.size;
  }

  subscribe(principal: Principal, stream: SseStream, lastEventId: string | undefined): void {
    const subscriber = { principal, stream };
    if (lastEventId !== undefined) {
      const [instance, seqText] = lastEventId.split('-');
      const seq = Number(seqText);
      const first = this.recent[0]?.seq ?? this.sequence + 1;
      if (instance !== this.instance || !Number.isInteger(seq) || seq < first - 1 || seq > this.sequence) {
        void stream.send(FeedEvent.Reset, JSON.stringify({ reason: 'the changes since that event are no longer kept; list the runs again' }), this.id(this.sequence));
      } else {
        for (const change of this.recent) if (change.seq > seq && visible(principal, change.run)) void stream.send(FeedEvent.Run, JSON.stringify(change.run), this.id(change.seq));
      }
    }
    this.subscribers.add(subscriber);
    stream.onClose(() => this.subscribers.delete(subscriber));
  }

  close(): void {
    this.unsubscribe();
    this.subscribers.clear();
  }

  private publish(run: CloudRun): void {
    const seq = ++this.sequence;
    this.recent.push({ seq, run });
    if (this.recent.length > KEPT) this.recent.shift();
    const data = JSON.stringify(run);
    for (const { principal, stream } of this.subscribers) {
      if (visible(principal, run)) void stream.send(FeedEvent.Run, data, this.id(seq));
    }
  }

  private id(seq: number): string {
    return `${this.instance}-${seq}`;
  }
}

function visible(principal: Principal, run: CloudRun): boolean {
  return principal.admin || run.user === principal.user;
}
