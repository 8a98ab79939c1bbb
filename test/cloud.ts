/**
 * Test harness for qwexcloud: the built server (dist/server/qwexcloud.js) as
 * a real process on 127.0.0.1, with its data directory, a database (SQLite
 * in the data directory, or a database of a throwaway PostgreSQL), tokens
 * made with its own CLI, and clients (src/cloud/client.ts) for them.
 */
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { CloudClient } from '../src/cloud/client.js';
import { ROOT, requireComponent, until } from './helpers.js';
import { postgresUnavailable, startPostgres, type PostgresServer } from './postgres.js';

export const QWEXCLOUD = join(ROOT, 'dist', 'server', 'qwexcloud.js');

export type DbKind = 'sqlite' | 'postgres';
export const DATABASES: DbKind[] = ['sqlite', 'postgres'];

/** Runs the qwexcloud CLI (token, migrate...). */
export function qwexcloud(args: string[], env: Record<string, string> = {}) {
  return execa(process.execPath, [QWEXCLOUD, ...args], { reject: false, env: { ...process.env, ...env } });
}

/**
 * A database for one suite: a fresh SQLite file, or a fresh database on the
 * file's PostgreSQL server (started on first use, stopped by `closeDatabases`).
 */
let postgres: Promise<PostgresServer> | undefined;
let databases = 0;

export function skipWithoutDatabase(ctx: { skip(): void }, kind: DbKind): void {
  if (kind === 'postgres') requireComponent(ctx, 'QWEX_REQUIRE_POSTGRES', postgresUnavailable());
}

export async function databaseUrl(kind: DbKind, data: string): Promise<string> {
  if (kind === 'sqlite') return `sqlite:${join(data, 'qwexcloud.db')}`;
  postgres ??= startPostgres();
  return (await postgres).createDatabase(`qwexcloud_${process.pid}_${++databases}`);
}

export async function closeDatabases(): Promise<void> {
  const server = postgres;
  postgres = undefined;
  if (server) await (await server).stop();
}

export interface CloudServer {
  url: string;
  data: string;
  db: string;
  /** Everything the server printed (JSON log lines). */
  output(): string;
  /** A new token for `user` (made with `qwexcloud token create`). */
  token(user: string, admin?: boolean): Promise<string>;
  client(token: string, fetchImpl?: typeof fetch): CloudClient;
  /** Stops the server (SIGTERM, or SIGKILL for a crash) and starts it again on the same port, data and database. */
  restart(options?: { signal?: NodeJS.Signals; args?: string[]; targets?: string[] }): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Stops it and removes its data directory. */
  cleanup(): Promise<void>;
}

export interface CloudOptions {
  db: DbKind;
  targets?: string[];
  /** YAML written to a config file passed with --config. */
  config?: string;
  env?: Record<string, string>;
  args?: string[];
}

export async function startCloud(options: CloudOptions): Promise<CloudServer> {
  const base = realpathSync(mkdtempSync(join(tmpdir(), 'qwexcloud-test-')));
  const data = join(base, 'data');
  const db = await databaseUrl(options.db, data);
  const common = ['--data', data, '--db', db];
  if (options.config !== undefined) {
    writeFileSync(join(base, 'qwexcloud.yaml'), options.config);
    common.push('--config', join(base, 'qwexcloud.yaml'));
  }
  const env = { ...process.env, ...options.env } as Record<string, string>;
  let proc: ResultPromise | undefined;
  let output = '';
  let port = 0;
  let url = '';

  let targets = options.targets ?? (options.config === undefined ? ['local'] : []);
  const launch = async (extra: string[]): Promise<void> => {
    const args = ['serve', '--listen', `127.0.0.1:${port}`, ...common, ...targets.flatMap((t) => ['--target', t]), ...(options.args ?? []), ...extra];
    const started = execa(process.execPath, [QWEXCLOUD, ...args], { env, reject: false, buffer: false });
    proc = started;
    let ready = '';
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString();
      output += text;
      const line = text.split('\n').find((l) => l.includes('"event":"ready"'));
      if (line) ready = (JSON.parse(line) as { url: string }).url;
    };
    started.stdout?.on('data', onData);
    started.stderr?.on('data', onData);
    let exited = false;
    void started.then(() => (exited = true));
    await until(() => {
      if (exited) throw new Error(`qwexcloud exited before it was ready:\n${output}`);
      return ready || undefined;
    }, 30_000, 'qwexcloud to be ready');
    url = ready;
    port = Number(new URL(ready).port);
  };
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    const running = proc;
    proc = undefined;
    if (!running || (running.exitCode !== undefined && running.exitCode !== null)) return;
    running.kill(signal);
    const timer = setTimeout(() => running.kill('SIGKILL'), 10_000);
    await running;
    clearTimeout(timer);
  };

  await launch([]);
  return {
    get url() {
      return url;
    },
    data,
    db,
    output: () => output,
    async token(user: string, admin = false): Promise<string> {
      const r = await qwexcloud(['token', 'create', '--user', user, ...(admin ? ['--admin'] : []), ...common]);
      if (r.exitCode !== 0) throw new Error(`token create failed: ${r.stderr}`);
      return String(r.stdout).trim();
    },
    client(token: string, fetchImpl?: typeof fetch): CloudClient {
      return new CloudClient({ url, token, ...(fetchImpl ? { fetch: fetchImpl } : {}) });
    },
    async restart(restart: { signal?: NodeJS.Signals; args?: string[]; targets?: string[] } = {}): Promise<void> {
      await stop(restart.signal);
      if (restart.targets) targets = restart.targets;
      await launch(restart.args ?? []);
    },
    stop,
    async cleanup(): Promise<void> {
      await stop();
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/** The CLI arguments every qwexcloud command of this server needs (token list, revoke). */
export function serverArgs(server: CloudServer): string[] {
  return ['--data', server.data, '--db', server.db];
}

export interface SseEvent {
  event: string | undefined;
  id: string | undefined;
  data: string;
}

export interface RawEventStream {
  status: number;
  headers: import('node:http').IncomingHttpHeaders;
  /** Events so far (grows as they arrive). */
  events: SseEvent[];
  /** Settles when the server ends the stream. */
  ended: Promise<void>;
  /** Cuts the connection (as a network drop would). */
  cut(): void;
}

/** A raw HTTP GET of an event stream (node:http, its own connection): what a dropped connection looks like, exactly. */
export async function openEventStream(url: string, path: string, headers: Record<string, string>): Promise<RawEventStream> {
  const { request } = await import('node:http');
  const { createParser } = await import('eventsource-parser');
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), { headers: { accept: 'text/event-stream', ...headers }, agent: false }, (res) => {
      const events: SseEvent[] = [];
      const parser = createParser({ onEvent: (e) => events.push({ event: e.event, id: e.id, data: e.data }) });
      res.setEncoding('utf8');
      res.on('data', (text: string) => parser.feed(text));
      const ended = new Promise<void>((done) => {
        res.on('end', () => done());
        res.on('close', () => done());
        res.on('error', () => done());
      });
      resolve({ status: res.statusCode ?? 0, headers: res.headers, events, ended, cut: () => req.destroy() });
    });
    req.on('error', (error) => {
      if ((error as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(error);
    });
    req.end();
  });
}

/** A raw request (no URL normalisation: "../" is sent as typed). */
export async function rawRequest(url: string, options: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<{ status: number; body: string; json: () => any }> {  
  const { request } = await import('node:http');
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: target.hostname, port: target.port, method: options.method ?? 'GET', path: options.path, headers: options.headers ?? {}, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, body, json: () => JSON.parse(body) });
      });
    });
    req.on('error', reject);
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}
