/**
 * The FAKE API server's object store: every object under one
 * resourceVersion counter, watch events ADDED/MODIFIED/DELETED kept for
 * resuming from a resourceVersion (410 Gone for one older than the kept
 * history), and label selectors. Plain data: the controllers in this folder
 * change objects and call `touch`.
 */

export type Obj = Record<string, any>;

export interface Kind {
  /** The URL segment and the key prefix. */
  plural: string;
  apiVersion: string;
  kind: string;
}

export const KINDS: Record<string, Kind> = {
  jobs: { plural: 'jobs', apiVersion: 'batch/v1', kind: 'Job' },
  pods: { plural: 'pods', apiVersion: 'v1', kind: 'Pod' },
  workloads: { plural: 'workloads', apiVersion: 'kueue.x-k8s.io/v1beta1', kind: 'Workload' },
  localqueues: { plural: 'localqueues', apiVersion: 'kueue.x-k8s.io/v1beta1', kind: 'LocalQueue' },
};

export interface WatchEvent {
  rv: number;
  plural: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}

export type Selector = [string, string | undefined][];

interface Watcher {
  plural: string;
  ns: string;
  selector: Selector;
  send(e: WatchEvent): void;
  end(): void;
}

export class ObjectStore {
  private readonly objects = new Map<string, Obj>();
  private readonly history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private rv = 1;

  constructor(private readonly historyLimit = 10_000) {}

  get resourceVersion(): number {
    return this.rv;
  }

  get(plural: string, ns: string, name: string): Obj | undefined {
    return this.objects.get(key(plural, ns, name));
  }

  /** Objects of a kind (the store's own, not copies), optionally in one namespace. */
  all(plural: string, ns?: string): Obj[] {
    return [...this.objects.values()].filter((o) => o.__plural === plural && (ns === undefined || o.metadata.namespace === ns));
  }

  /** Copies of a kind's objects in a namespace, as the API lists them. */
  list(plural: string, ns: string): Obj[] {
    return this.all(plural, ns).map(strip);
  }

  put(plural: string, obj: Obj): void {
    const kind = KINDS[plural]!;
    obj.apiVersion = kind.apiVersion;
    obj.kind = kind.kind;
    obj.__plural = plural;
    obj.metadata.resourceVersion = String(++this.rv);
    obj.__rv0 = this.rv;
    obj.status ??= {};
    this.objects.set(key(plural, obj.metadata.namespace, obj.metadata.name), obj);
    this.emit(plural, 'ADDED', obj);
  }

  /** Records a change of an object (a new resourceVersion, a MODIFIED event); ignored for one no longer stored. */
  touch(plural: string, obj: Obj): void {
    if (this.objects.get(key(plural, obj.metadata.namespace, obj.metadata.name)) !== obj) return;
    obj.metadata.resourceVersion = String(++this.rv);
    this.emit(plural, 'MODIFIED', obj);
  }

  remove(plural: string, obj: Obj): void {
    this.objects.delete(key(plural, obj.metadata.namespace, obj.metadata.name));
    obj.metadata.resourceVersion = String(++this.rv);
    this.emit(plural, 'DELETED', obj);
  }

  /**
   * Streams events of a kind to `write`: the current objects (no `from`), or
   * what happened after `from` (resuming). Returns false, having written the
   * 410 Expired error, when `from` is older than the kept history.
   */
  watch(plural: string, ns: string, selector: Selector, from: string | null, write: (e: { type: string; object: Obj }) => void, end: () => void): (() => void) | false {
    const start = from === null || from === '' || from === '0' ? undefined : Number(from);
    if (start === undefined) {
      for (const o of this.list(plural, ns)) if (matches(selector, o.metadata.labels)) write({ type: 'ADDED', object: o });
    } else if (this.history.length === 0 ? start < this.rv : start < this.history[0]!.rv - 1) {
      write({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: `too old resource version: ${start} (${this.rv})`, reason: 'Expired', code: 410 } });
      return false;
    } else {
      for (const e of this.history) if (e.rv > start && e.plural === plural && e.object.metadata.namespace === ns && matches(selector, e.object.metadata.labels)) write(e);
    }
    const watcher: Watcher = {
      plural,
      ns,
      selector,
      send: (e) => write({ type: e.type, object: e.object }),
      end: () => {
        this.watchers.delete(watcher);
        end();
      },
    };
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }

  /** Ends every open watch (a dropped connection, an API server restart). */
  endWatches(): void {
    for (const w of [...this.watchers]) w.end();
  }

  /** Forgets watch history, so that resuming from an old resourceVersion gets 410 Gone. */
  compactHistory(): void {
    this.history.length = 0;
  }

  private emit(plural: string, type: WatchEvent['type'], obj: Obj): void {
    const event: WatchEvent = { rv: this.rv, plural, type, object: strip(obj) };
    this.history.push(event);
    if (this.history.length > this.historyLimit) this.history.shift();
    for (const w of this.watchers) {
      if (w.plural === plural && w.ns === obj.metadata.namespace && matches(w.selector, obj.metadata.labels)) w.send(event);
    }
  }
}

function key(plural: string, ns: string, name: string): string {
  return `${plural}/${ns}/${name}`;
}

export function parseSelector(text: string | null): Selector {
  if (!text) return [];
  return text.split(',').map((part) => {
    const [k, v] = part.split('=');
    return [k!.trim(), v?.trim()];
  });
}

export function matches(selector: Selector, labels: Record<string, string> | undefined): boolean {
  return selector.every(([k, v]) => (v === undefined ? labels?.[k] !== undefined : labels?.[k] === v));
}

export function setCondition(status: Obj, condition: Obj): void {
  const list = (status.conditions ??= []) as Obj[];
  const full = { lastProbeTime: null, lastTransitionTime: new Date().toISOString(), ...condition };
  const i = list.findIndex((c) => c.type === condition.type);
  if (i === -1) list.push(full);
  else list[i] = full;
}

/** A copy without the store's own bookkeeping (keys starting with __). */
export function strip(obj: Obj): Obj {
  return structuredClone(Object.fromEntries(Object.entries(obj).filter(([k]) => !k.startsWith('__')))) as Obj;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
