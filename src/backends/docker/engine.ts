import { readFileSync } from 'node:fs';
import type { Agent, IncomingMessage, RequestOptions } from 'node:http';
import { join } from 'node:path';
import type Dockerode from 'dockerode';
import { ErrorCode, QwexError } from '../../errors.js';

/** Where the engine is, as a user would name it in DOCKER_HOST. */
export function engineEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
}

/**
 * The Docker engine's HTTP API, the dozen calls qwex makes, over node:http.
 * Not dockerode: loading it (its gRPC and SSH halves) cost about 80 ms of
 * every container run's supervisor on the development machine, where
 * node:http costs a few. The engine is reached as DOCKER_HOST says, as the
 * docker CLI and dockerode do: unix:// (the default socket), or tcp://
 * (https with DOCKER_TLS_VERIFY=1 or port 2376, the client certificates in
 * DOCKER_CERT_PATH). ssh:// is refused with a hint (a forwarded socket).
 * Errors carry the engine's HTTP status (`statusCode`) and JSON answer
 * (`json`), as dockerode's did.
 */
export interface Engine {
  getContainer(id: string): EngineContainer;
  /** Creates a container (`name` goes into the query, the rest is the body). Rejects with status 404 when the image is missing, 409 when the name is taken. */
  createContainer(spec: Dockerode.ContainerCreateOptions): Promise<EngineContainer>;
  /** The image's details; rejects with status 404 when the engine does not have it. */
  inspectImage(image: string): Promise<unknown>;
  /** Pulls an image to its end, handing each progress event to `onEvent`; rejects with the registry's or engine's words when it fails. */
  pull(image: string, signal: AbortSignal, onEvent?: (event: PullEvent) => void): Promise<void>;
  listContainers(options: { all?: boolean; filters?: Record<string, string[]> }): Promise<Dockerode.ContainerInfo[]>;
  ping(): Promise<void>;
}

/** One event of the engine's pull stream: a layer's status, with its bytes once it downloads. */
export interface PullEvent {
  id?: string;
  status?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string };
}

export interface EngineContainer {
  readonly id: string;
  inspect(): Promise<Dockerode.ContainerInspectInfo>;
  start(): Promise<void>;
  /** Settles once the container is not running. */
  wait(options?: { abortSignal?: AbortSignal }): Promise<unknown>;
  kill(options?: { signal?: string }): Promise<void>;
  remove(options?: { force?: boolean }): Promise<void>;
  /** The multiplexed output stream (8-byte frame headers), from the first byte; with `follow`, until the container stops. */
  logs(options: { follow?: boolean; stdout?: boolean; stderr?: boolean; abortSignal?: AbortSignal }): Promise<NodeJS.ReadableStream & { destroy(): void }>;
}

/** A client for the engine named by DOCKER_HOST (or the default socket). Nothing is asked of it yet: the first call says whether it answers. */
export async function connect(): Promise<Engine> {
  const { request: httpRequest, Agent: HttpAgent } = await import('node:http');
  const target = endpointOptions();
  let request = httpRequest;
  let agent: Agent;
  if (target.tls) {
    const https = await import('node:https');
    request = https.request as typeof httpRequest;
    agent = new https.Agent({ keepAlive: true, ...target.tls });
  } else {
    agent = new HttpAgent({ keepAlive: true });
  }
  const base: RequestOptions = { ...target.where, agent };

  /** One call: resolves with the answer's stream once its status is known; a status of 400 or more rejects with the engine's words. */
  const call = (method: string, path: string, options: { query?: Record<string, unknown>; body?: unknown; signal?: AbortSignal } = {}): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      const body = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
      const req = request(
        {
          ...base,
          method,
          path: `${path}${queryString(options.query)}`,
          headers: body ? { 'Content-Type': 'application/json', 'Content-Length': String(body.length) } : {},
          ...(options.signal ? { signal: options.signal } : {}),
        },
        (res) => {
          const status = res.statusCode ?? 0;
          if (status < 400) return resolve(res);
          readAll(res).then(
            (text) => reject(httpError(status, text)),
            (error: unknown) => reject(error as Error),
          );
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const json = async <T>(method: string, path: string, options: { query?: Record<string, unknown>; body?: unknown; signal?: AbortSignal } = {}): Promise<T> => {
    const text = await readAll(await call(method, path, options));
    return (text === '' ? undefined : JSON.parse(text)) as T;
  };

  const container = (id: string): EngineContainer => {
    const at = `/containers/${encodeURIComponent(id)}`;
    return {
      id,
      inspect: () => json('GET', `${at}/json`),
      start: async () => void (await json('POST', `${at}/start`)),
      wait: (o = {}) => json('POST', `${at}/wait`, o.abortSignal ? { signal: o.abortSignal } : {}),
      kill: async (o = {}) => void (await json('POST', `${at}/kill`, { query: { signal: o.signal } })),
      remove: async (o = {}) => void (await json('DELETE', at, { query: { force: o.force } })),
      logs: async (o) => {
        const res = await call('GET', `${at}/logs`, { query: { follow: o.follow, stdout: o.stdout, stderr: o.stderr }, ...(o.abortSignal ? { signal: o.abortSignal } : {}) });
        return res as IncomingMessage & { destroy(): void };
      },
    };
  };

  return {
    getContainer: container,
    createContainer: async (spec) => {
      const { name, ...body } = spec;
      const created = await json<{ Id: string }>('POST', '/containers/create', { query: { name }, body });
      return container(created.Id);
    },
    inspectImage: (image) => json('GET', `/images/${image}/json`),
    pull: async (image, signal, onEvent) => {
      const res = await call('POST', '/images/create', { query: pullQuery(image), signal });
      // Progress as JSON objects, one per line, as the pull goes; a failure comes as one with `error`, under a status of 200.
      let failure: Error | undefined;
      const take = (line: string): void => {
        if (line.trim() === '') return;
        let event: PullEvent;
        try {
          event = JSON.parse(line) as PullEvent;
        } catch {
          return; // not an event: nothing to report
        }
        if (event.error !== undefined) failure ??= new Error(event.errorDetail?.message ?? event.error);
        else onEvent?.(event);
      };
      await new Promise<void>((resolve, reject) => {
        let rest = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          const lines = (rest + chunk).split(/\r?\n/);
          rest = lines.pop() ?? '';
          for (const line of lines) take(line);
        });
        res.on('end', () => {
          take(rest);
          resolve();
        });
        res.on('error', reject);
        res.on('aborted', () => reject(new Error('the engine closed the connection')));
      });
      if (failure) throw failure;
    },
    listContainers: (o) => json('GET', '/containers/json', { query: { all: o.all, filters: o.filters ? JSON.stringify(o.filters) : undefined } }),
    ping: async () => void (await readAll(await call('GET', '/_ping'))),
  };
}

/** Where DOCKER_HOST points: a socket path, or a host and port (with TLS material when it asks for TLS). */
function endpointOptions(env: NodeJS.ProcessEnv = process.env): { where: RequestOptions; tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized?: boolean } } {
  const host = env.DOCKER_HOST;
  if (host === undefined || host === '') return { where: { socketPath: '/var/run/docker.sock' } };
  if (host.startsWith('unix://')) return { where: { socketPath: host.slice('unix://'.length) || '/var/run/docker.sock' } };
  let url: URL;
  try {
    url = new URL(host.includes('//') ? host : `tcp://${host}`);
  } catch {
    throw new QwexError(ErrorCode.BackendUnavailable, `DOCKER_HOST "${host}" is not an address qwex can use`, { hint: 'use unix:///path/to/docker.sock or tcp://host:port' });
  }
  if (url.protocol !== 'tcp:' && url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new QwexError(ErrorCode.BackendUnavailable, `DOCKER_HOST ${url.protocol}// engines are not supported by qwex`, {
      hint: url.protocol === 'ssh:' ? 'forward the remote socket (ssh -NL /tmp/docker.sock:/var/run/docker.sock HOST) and set DOCKER_HOST=unix:///tmp/docker.sock' : 'use unix:// or tcp://',
    });
  }
  const where: RequestOptions = { host: url.hostname, port: Number(url.port || (url.protocol === 'https:' ? 443 : 2375)) };
  if (env.DOCKER_TLS_VERIFY !== '1' && url.port !== '2376' && url.protocol !== 'https:') return { where };
  const certs = env.DOCKER_CERT_PATH;
  const read = (name: string): Buffer | undefined => (certs ? readFileSync(join(certs, name)) : undefined);
  const [ca, cert, key] = [read('ca.pem'), read('cert.pem'), read('key.pem')];
  return { where, tls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}), rejectUnauthorized: env.DOCKER_TLS_VERIFY === '1' } };
}

/** The query of a call: booleans as 1/0 as the engine takes them; absent values left out. */
function queryString(query: Record<string, unknown> | undefined): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    params.set(key, typeof value === 'boolean' ? (value ? '1' : '0') : String(value));
  }
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}

/** `fromImage` and `tag` of a pull: the tag after the last colon of the last path part (a registry's port is not a tag); a digest stays whole. */
function pullQuery(image: string): Record<string, string> {
  if (image.includes('@')) return { fromImage: image };
  const slash = image.lastIndexOf('/');
  const colon = image.lastIndexOf(':');
  if (colon > slash) return { fromImage: image.slice(0, colon), tag: image.slice(colon + 1) };
  return { fromImage: image, tag: 'latest' };
}

function readAll(stream: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('error', reject);
    stream.on('aborted', () => reject(new Error('the engine closed the connection')));
  });
}

/** As dockerode's errors: the status, the engine's JSON answer, and its message. */
function httpError(status: number, text: string): Error {
  let json: { message?: unknown } | undefined;
  try {
    json = JSON.parse(text) as { message?: unknown };
  } catch {
    json = undefined; // not the engine's JSON (a proxy's page): the text is the message
  }
  const message = typeof json?.message === 'string' ? json.message : text.trim();
  return Object.assign(new Error(`(HTTP code ${status}) ${message}`), { statusCode: status, json: json ?? { message } });
}

/** A container's state, 'gone' when the engine does not have it, undefined when the engine did not answer. */
export async function inspectQuietly(container: EngineContainer): Promise<Dockerode.ContainerInspectInfo | 'gone' | undefined> {
  try {
    return await container.inspect();
  } catch (error) {
    return statusOf(error) === 404 ? 'gone' : undefined;
  }
}

export function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The engine's own words: its JSON `message`, else the error's. */
export function engineMessage(error: unknown): string {
  const json = (error as { json?: { message?: unknown } } | null)?.json;
  if (json && typeof json.message === 'string') return json.message.trim();
  return (error as Error)?.message?.replace(/^\(HTTP code \d+\) ([a-z ]+ - )?/, '').trim() ?? String(error);
}

export function engineError(error: unknown, what: string, code: ErrorCode): QwexError {
  if (error instanceof QwexError) return error;
  if (statusOf(error) === undefined) return unreachable(error);
  return new QwexError(code, `${what}: ${engineMessage(error)}`, { cause: error });
}

/** The engine did not answer at all (no socket, refused, not ours to use). */
export function unreachable(error: unknown): QwexError {
  const where = engineEndpoint();
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'EACCES') {
    return new QwexError(ErrorCode.BackendUnavailable, `permission denied on the Docker engine's socket (${where})`, {
      hint: 'add yourself to the docker group (sudo usermod -aG docker $USER, then log in again), or set DOCKER_HOST to an engine you may use',
    });
  }
  return new QwexError(ErrorCode.BackendUnavailable, `no Docker engine answers at ${where}${typeof code === 'string' ? ` (${code})` : ''}`, {
    hint: 'start it (sudo systemctl start docker, or scripts/provision-docker.sh), or set DOCKER_HOST to where it listens',
    transient: true,
  });
}
