import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createReadStream, statSync } from 'node:fs';
import { relative } from 'node:path';
import { Readable } from 'node:stream';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { ErrorCode, QwexError } from '../errors.js';
import { NO_PROGRESS, type Progress } from '../progress.js';
import { ContentStore, snapshotWorkspace, type Manifest } from '../workspace/snapshot.js';
import {
  API_PREFIX,
  FeedEvent,
  IDEMPOTENCY_HEADER,
  LogEvent,
  type ArtifactList,
  type CloudJobSpec,
  type CloudRun,
  type CloudRunDetail,
  type LogStream,
  type Me,
  type RunPage,
  type RunQuery,
  type SubmitRequest,
  type TargetInfo,
} from './api.js';

/**
 * A client of qwexcloud's API over fetch: no command-line code, no printing.
 * Errors are QwexErrors with the server's stable codes; a server that cannot
 * be reached (or does not answer as qwexcloud) is QWEX_SERVER_UNAVAILABLE.
 * Used by the CLI's cloud backend and by the server's tests.
 */
export interface CloudClientOptions {
  /** The server's base URL, e.g. https://qwex.example.com (a path prefix is kept). */
  url: string;
  /** The token, or where to read it at each request (a login or logout made meanwhile then counts at once). */
  token: string | (() => string);
  /** For tests and proxies: the fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

/** How many blobs upload at once. */
const UPLOAD_CONCURRENCY = 4;
/** Hashes asked about per POST /v1/blobs/missing. */
const ASK_CHUNK = 20_000;
/** Reconnection attempts of a follow in a row without progress before it gives up. */
const FOLLOW_RETRIES = 8;

export interface SubmitProjectResult {
  run: CloudRunDetail;
  /** What had to be sent: nothing when the server had every file's content already. */
  uploaded: { files: number; bytes: number };
}

export interface FollowOptions {
  stream?: LogStream;
  /** Start at this byte (0: from the beginning). */
  offset?: number;
  /** Keep following until the run ends (default true); false: what is there now, then stop. */
  follow?: boolean;
  /** Each chunk of the log, in order, with the offset after it; awaited (backpressure). */
  onData: (chunk: Buffer, offset: number) => void | Promise<void>;
  signal?: AbortSignal;
}

export interface FollowResult {
  /** The byte offset reached: resume from here. */
  offset: number;
  /** The final run, when it ended while followed. */
  run?: CloudRunDetail;
  /** How many times a dropped connection was resumed. */
  resumed: number;
}

export class CloudClient {
  private readonly base: string;
  private readonly token: string | (() => string);
  private readonly fetchImpl: typeof fetch;

  constructor(options: CloudClientOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.token = options.token;
    this.fetchImpl = options.fetch ?? fetch;
  }

  health(): Promise<{ status: string; version: string }> {
    return this.json('GET', '/health');
  }

  me(): Promise<Me> {
    return this.json('GET', '/me');
  }

  async targets(): Promise<TargetInfo[]> {
    return (await this.json<{ targets: TargetInfo[] }>('GET', '/targets')).targets;
  }

  /** The hashes among `hashes` whose content the server lacks. */
  async missingBlobs(hashes: readonly string[], signal?: AbortSignal): Promise<string[]> {
    const unique = [...new Set(hashes)];
    const missing: string[] = [];
    for (let i = 0; i < unique.length; i += ASK_CHUNK) {
      missing.push(...(await this.json<{ missing: string[] }>('POST', '/blobs/missing', { sha256: unique.slice(i, i + ASK_CHUNK) }, { signal })).missing);
    }
    return missing;
  }

  /** Uploads a file's content under its sha256 (streamed; the server checks the hash). `signal` aborts it mid-way; `onSent` counts bytes as they go. */
  async uploadBlob(sha256: string, path: string, options: { signal?: AbortSignal; onSent?: (bytes: number) => void } = {}): Promise<{ created: boolean; size: number }> {
    const { signal, onSent } = options;
    const size = statSync(path).size;
    const content = Readable.toWeb(createReadStream(path)) as ReadableStream<Uint8Array>;
    // Counted as fetch reads it: a web stream is pulled, so nothing is counted before it is sent.
    const counted = new TransformStream<Uint8Array, Uint8Array>({ transform: (chunk, controller) => (onSent?.(chunk.byteLength), controller.enqueue(chunk)) });
    const response = await this.send('PUT', `/blobs/${sha256}`, {
      body: onSent === undefined ? content : content.pipeThrough(counted),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      ...(signal ? { signal } : {}),
    });
    return (await response.json()) as { created: boolean; size: number };
  }

  /**
   * Uploads the contents of a snapshot's files that the server lacks (and
   * only those), from the local content store. `signal` aborts the uploads
   * in progress; what was uploaded stays on the server.
   */
  async uploadMissing(store: ContentStore, manifest: Pick<Manifest, 'files'>, options: { signal?: AbortSignal; progress?: Progress } = {}): Promise<{ files: number; bytes: number }> {
    const missing = await this.missingBlobs(manifest.files.map((f) => f.sha256), options.signal);
    const sizes = new Map(manifest.files.map((f) => [f.sha256, f.size]));
    const queue = [...missing];
    const total = queue.reduce((n, sha) => n + (sizes.get(sha) ?? 0), 0);
    const step = (options.progress ?? NO_PROGRESS).step(`uploading the workspace to ${new URL(this.base).host}`, 'bytes', total);
    const detail = `${missing.length} file${missing.length === 1 ? '' : 's'}`;
    let bytes = 0;
    let sent = 0;
    const worker = async (): Promise<void> => {
      for (let sha = queue.shift(); sha !== undefined; sha = queue.shift()) {
        options.signal?.throwIfAborted();
        await this.uploadBlob(sha, store.objectPath(sha), { ...(options.signal ? { signal: options.signal } : {}), onSent: (n) => step.set((sent += n), { detail }) });
        bytes += sizes.get(sha) ?? 0;
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(UPLOAD_CONCURRENCY, queue.length) }, worker));
    } finally {
      step.end();
    }
    return { files: missing.length, bytes };
  }

  /**
   * Submits a run. With `idempotencyKey`, a repeat of the same request (a
   * retry after a lost answer, a second supervisor) gets the run the first
   * created instead of a second run.
   */
  submit(request: SubmitRequest, options: { idempotencyKey?: string } = {}): Promise<CloudRunDetail> {
    return this.json('POST', '/runs', request, options.idempotencyKey === undefined ? {} : { headers: { [IDEMPOTENCY_HEADER]: options.idempotencyKey } });
  }

  /** The run a submit with this idempotency key created; QWEX_NOT_FOUND when no submit used it. */
  submission(key: string): Promise<CloudRunDetail> {
    return this.json('GET', `/submissions/${encodeURIComponent(key)}`);
  }

  /**
   * Snapshots `project` as `qwex run --snapshot` does (into the local content
   * store), asks which contents the server lacks, uploads only those, and
   * submits the run with the manifest. Ignored paths (.gitignore,
   * .qwexignore) are not sent: they stay on this machine.
   */
  async submitProject(
    project: string,
    spec: CloudJobSpec & { target?: string; backend?: string; queue?: string },
    options: { store?: ContentStore; maxBytes?: number; progress?: Progress } = {},
  ): Promise<SubmitProjectResult> {
    const store = options.store ?? new ContentStore();
    const { target, backend, queue, ...job } = spec;
    const cwd = job.cwd ?? '';
    const exclude = (job.watch ?? ['out']).map((w) => relative(project, `${project}/${cwd}/${w}`).split('\\').join('/'));
    const progress = options.progress ?? NO_PROGRESS;
    const manifest = await snapshotWorkspace(project, store, { exclude, progress, ...(options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes }) });
    const uploaded = await this.uploadMissing(store, manifest, { progress });
    const run = await this.submit({
      ...(target === undefined ? {} : { target }),
      ...(backend === undefined ? {} : { backend }),
      ...(queue === undefined ? {} : { queue }),
      job,
      workspace: { files: manifest.files, symlinks: manifest.symlinks },
    });
    return { run, uploaded };
  }

  list(query: RunQuery = {}): Promise<RunPage> {
    return this.json('GET', `/runs${queryString(query)}`);
  }

  /** Every run matching `query`, newest first, page after page. */
  async *listAll(query: Omit<RunQuery, 'cursor'> = {}): AsyncGenerator<CloudRun> {
    let cursor: string | undefined;
    do {
      const page = await this.list({ ...query, ...(cursor === undefined ? {} : { cursor }) });
      yield* page.runs;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  get(id: string): Promise<CloudRunDetail> {
    return this.json('GET', `/runs/${encodeURIComponent(id)}`);
  }

  cancel(id: string, graceMs?: number): Promise<CloudRunDetail> {
    return this.json('POST', `/runs/${encodeURIComponent(id)}/cancel`, graceMs === undefined ? {} : { graceMs });
  }

  rerun(id: string): Promise<CloudRunDetail> {
    return this.json('POST', `/runs/${encodeURIComponent(id)}/rerun`, {});
  }

  artifacts(id: string): Promise<ArtifactList> {
    return this.json('GET', `/runs/${encodeURIComponent(id)}/artifacts`);
  }

  /** One artifact's content, as a stream. */
  async artifact(id: string, path: string): Promise<Readable> {
    const response = await this.send('GET', `/runs/${encodeURIComponent(id)}/artifacts/${path.split('/').map(encodeURIComponent).join('/')}`);
    return Readable.fromWeb(response.body as WebReadableStream);
  }

  /** A log as it is now, from `offset`. */
  async logs(id: string, stream: LogStream = 'stdout', offset = 0): Promise<Buffer> {
    const response = await this.send('GET', `/runs/${encodeURIComponent(id)}/logs/${stream}${offset > 0 ? `?offset=${offset}` : ''}`);
    return Buffer.from(await response.arrayBuffer());
  }

  /**
   * Follows a log over Server-Sent Events. A dropped connection is resumed
   * from the last offset received (Last-Event-ID), so every byte arrives
   * once, in order. Resolves when the run ended (with its final record), or,
   * not following, at the end of what there is.
   */
  async followLogs(id: string, options: FollowOptions): Promise<FollowResult> {
    const follow = options.follow ?? true;
    let offset = options.offset ?? 0;
    let resumed = 0;
    let failures = 0;
    for (;;) {
      const before = offset;
      let finished: { run?: CloudRunDetail } | undefined;
      try {
        const response = await this.send('GET', `/runs/${encodeURIComponent(id)}/logs?stream=${options.stream ?? 'stdout'}&follow=${follow ? 1 : 0}`, {
          headers: { accept: 'text/event-stream', 'last-event-id': String(offset) },
          ...(options.signal ? { signal: options.signal } : {}),
        });
        await readEvents(response, async (event) => {
          if (event.event === LogEvent.Chunk) {
            const chunk = Buffer.from(event.data, 'base64');
            const next = Number(event.id);
            // The id is the offset after the chunk: a resumed stream never hands over a byte twice.
            if (next - chunk.length !== offset) throw new QwexError(ErrorCode.ServerUnavailable, `log stream out of order: expected offset ${offset}, got ${next - chunk.length}`);
            offset = next;
            await options.onData(chunk, offset);
          } else if (event.event === LogEvent.End) {
            finished = { run: JSON.parse(event.data) as CloudRunDetail };
          } else if (event.event === LogEvent.Eof) {
            finished = {};
          }
        });
      } catch (error) {
        if (options.signal?.aborted) throw error;
        if (error instanceof QwexError && error.code !== ErrorCode.ServerUnavailable) throw error;
      }
      if (finished) return { offset, resumed, ...finished };
      if (options.signal?.aborted) return { offset, resumed };
      failures = offset > before ? 0 : failures + 1;
      if (failures > FOLLOW_RETRIES) {
        throw new QwexError(ErrorCode.ServerUnavailable, `lost the log stream of run ${id} at byte ${offset} and could not resume it`, { hint: 'follow again later: it resumes from any offset' });
      }
      resumed++;
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 100 * 2 ** failures)));
    }
  }

  /**
   * The change feed: `onRun` for each run change the token may see, until
   * `signal` aborts or the server closes the stream. `onReset` when the
   * server could not replay from `lastEventId` (list again). Resolves with
   * the last event id, to pass back on reconnecting.
   */
  async events(options: { onRun: (run: CloudRun) => void; onReset?: () => void; onOpen?: () => void; lastEventId?: string; signal?: AbortSignal }): Promise<string | undefined> {
    let last = options.lastEventId;
    const response = await this.send('GET', '/events', {
      headers: { accept: 'text/event-stream', ...(last === undefined ? {} : { 'last-event-id': last }) },
      ...(options.signal ? { signal: options.signal } : {}),
    });
    options.onOpen?.();
    try {
      await readEvents(response, (event) => {
        if (event.id !== undefined) last = event.id;
        if (event.event === FeedEvent.Run) options.onRun(JSON.parse(event.data) as CloudRun);
        else if (event.event === FeedEvent.Reset) options.onReset?.();
      });
    } catch (error) {
      if (!options.signal?.aborted) throw error;
    }
    return last;
  }

  private async json<T>(method: string, path: string, body?: unknown, extra: { headers?: Record<string, string>; signal?: AbortSignal | undefined } = {}): Promise<T> {
    const response = await this.send(method, path, {
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...extra.headers },
      ...(extra.signal ? { signal: extra.signal } : {}),
    });
    const text = await response.text();
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new QwexError(ErrorCode.ServerUnavailable, `${this.base} answered ${method} ${path} with something that is not JSON`, { hint: 'check that the URL is a qwexcloud server' });
    }
  }

  /** One request; any answer but 2xx becomes the QwexError it describes. */
  private async send(method: string, path: string, init: { body?: RequestInit['body']; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
    const token = typeof this.token === 'function' ? this.token() : this.token;
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.base}${API_PREFIX}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...init.headers },
        ...(init.body === undefined ? {} : { body: init.body, duplex: 'half' }),
        ...(init.signal ? { signal: init.signal } : {}),
      } as RequestInit);
    } catch (error) {
      if (init.signal?.aborted) throw error;
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new QwexError(ErrorCode.ServerUnavailable, `cannot reach qwexcloud at ${this.base}: ${cause?.code ?? cause?.message ?? (error as Error).message}`, {
        hint: 'check the URL and that the server runs (GET /v1/health)',
        // No answer came: the request may be retried (unlike an answer that says no).
        details: { unreachable: true },
        transient: true,
      });
    }
    if (response.ok) return response;
    const text = await response.text().catch(() => '');
    let body: { error?: { code?: string; message?: string; hint?: string; details?: Record<string, unknown> } } | undefined;
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      // not the API's error shape: a proxy's page, another server
    }
    const error = body?.error;
    if (error?.code && error.message) {
      throw new QwexError(error.code as ErrorCode, error.message, { ...(error.hint ? { hint: error.hint } : {}), ...(error.details ? { details: error.details } : {}) });
    }
    throw new QwexError(ErrorCode.ServerUnavailable, `${this.base} answered ${method} ${path} with HTTP ${response.status}, not qwexcloud's API`, { hint: 'check the URL (and any proxy in front of the server)' });
  }
}

/** Hands each Server-Sent Event of a response to `onEvent`, in order, awaiting each. Ends when the response does. */
async function readEvents(response: Response, onEvent: (event: EventSourceMessage) => void | Promise<void>): Promise<void> {
  if (!response.body) return;
  const pending: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (event) => pending.push(event) });
  const decoder = new TextDecoder();
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      parser.feed(decoder.decode(chunk, { stream: true }));
      while (pending.length > 0) await onEvent(pending.shift()!);
    }
  } catch (error) {
    if (error instanceof QwexError) throw error;
    throw new QwexError(ErrorCode.ServerUnavailable, `the event stream was cut: ${(error as Error).message}`);
  }
}

function queryString(query: RunQuery): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) params.append(key, String(v));
    else params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}
