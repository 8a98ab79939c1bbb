/**
 * The dashboard's one way to the server: the public /v1 API (the same as
 * the CLI's), authenticated by the HttpOnly cookie the login set, which
 * scripts never see. Requests that change something carry the CSRF header
 * the server requires with the cookie.
 */
import { API_PREFIX, CSRF_HEADER, FeedEvent, LogEvent } from '../../src/cloud/api.js';
import type { ArtifactList, CloudRun, CloudRunDetail, LogStream, Me, RunPage, RunUsage, WorkflowView } from '../../src/cloud/api.js';

export type { ArtifactList, CloudRun, CloudRunDetail, LogStream, Me, RunPage, RunUsage, WorkflowView };
export type { RunStatus } from '../../src/run/model.js';

/** An answer of the API that is an error: its stable code, message and hint. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** Told whenever the API says the session is gone (401), so the page can ask to log in again. */
let onUnauthorized: () => void = () => {};
export function whenUnauthorized(listener: () => void): void {
  onUnauthorized = listener;
}

async function request<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method !== 'GET') headers[CSRF_HEADER] = '1';
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(`${API_PREFIX}${path}`, { method, headers, credentials: 'same-origin', ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  } catch (error) {
    throw new ApiError(0, 'QWEX_SERVER_UNAVAILABLE', `the server cannot be reached (${(error as Error).message})`, 'is it still running?');
  }
  if (response.status === 204) return undefined as T;
  const data = (await response.json().catch(() => undefined)) as ({ error?: { code: string; message: string; hint?: string } } & T) | undefined;
  if (!response.ok) {
    if (response.status === 401 && !path.startsWith('/session')) onUnauthorized();
    const error = data?.error;
    throw new ApiError(response.status, error?.code ?? 'QWEX_INTERNAL', error?.message ?? `the server answered ${response.status}`, error?.hint);
  }
  return data as T;
}

export interface ListFilters {
  status?: string;
  backend?: string;
  q?: string;
}

export const api = {
  me: () => request<Me>('GET', '/me'),
  login: (token: string) => request<Me>('POST', '/session', { token }),
  logout: () => request<void>('DELETE', '/session'),
  runs(filters: ListFilters, cursor?: string): Promise<RunPage> {
    const query = new URLSearchParams({ limit: '200' });
    if (filters.status) query.set('status', filters.status);
    if (filters.backend) query.set('backend', filters.backend);
    if (filters.q) query.set('q', filters.q);
    if (cursor) query.set('cursor', cursor);
    return request<RunPage>('GET', `/runs?${query}`);
  },
  run: (id: string) => request<CloudRunDetail>('GET', `/runs/${id}`),
  cancel: (id: string) => request<CloudRunDetail>('POST', `/runs/${id}/cancel`, {}),
  rerun: (id: string) => request<CloudRunDetail>('POST', `/runs/${id}/rerun`, {}),
  artifacts: (id: string) => request<ArtifactList>('GET', `/runs/${id}/artifacts`),
  usage: (id: string, after?: string) => request<RunUsage>('GET', `/runs/${id}/usage${after ? `?after=${encodeURIComponent(after)}` : ''}`),
  workflow: (id: string) => request<WorkflowView>('GET', `/workflows/${encodeURIComponent(id)}`),
};

export function artifactUrl(runId: string, path: string): string {
  return `${API_PREFIX}/runs/${runId}/artifacts/${path.split('/').map(encodeURIComponent).join('/')}`;
}

export function logUrl(runId: string, stream: LogStream): string {
  return `${API_PREFIX}/runs/${runId}/logs/${stream}`;
}

/**
 * The change feed: `onRun` for every run change this session may see,
 * `onReset` when the server could not replay what was missed (list again).
 * The browser reconnects by itself, with Last-Event-ID. Returns the close.
 */
export function watchRuns(onRun: (run: CloudRun) => void, onReset: () => void): () => void {
  const source = new EventSource(`${API_PREFIX}/events`);
  source.addEventListener(FeedEvent.Run, (event) => onRun(JSON.parse((event as MessageEvent<string>).data) as CloudRun));
  source.addEventListener(FeedEvent.Reset, () => onReset());
  // A stream the server refused (the session ended) is not retried by the browser: find out why.
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) void api.me().catch(() => undefined);
  });
  return () => source.close();
}

/**
 * Follows one log from `offset`: `onBytes` with each chunk and the offset
 * after it, `onDone` when the run ended (or, for an ended run, at the end of
 * the log). A dropped connection is resumed by the browser at the last
 * chunk's id (its byte offset), so nothing is lost or shown twice. Returns the close.
 */
export function followLog(runId: string, stream: LogStream, offset: number, handlers: { onBytes: (bytes: Uint8Array, next: number) => void; onDone: () => void }): () => void {
  const source = new EventSource(`${API_PREFIX}/runs/${runId}/logs?stream=${stream}&follow=1&offset=${offset}`);
  source.addEventListener(LogEvent.Chunk, (event) => {
    const message = event as MessageEvent<string>;
    handlers.onBytes(decodeBase64(message.data), Number(message.lastEventId));
  });
  const done = (): void => {
    source.close();
    handlers.onDone();
  };
  source.addEventListener(LogEvent.End, done);
  source.addEventListener(LogEvent.Eof, done);
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) void api.me().catch(() => undefined);
  });
  return () => source.close();
}

function decodeBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
