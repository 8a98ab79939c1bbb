/**
 * What the cloud CLI tests share: a real qwexcloud (test/cloud.ts) on
 * 127.0.0.1 with SQLite and the local target, a user's sandbox with its own
 * config directory (where `qwex login` stores the token), and a TCP relay
 * between the two that can cut every connection or hold uploads, as a
 * network would (real sockets; nothing of qwex is faked).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Run } from '../src/run/model.js';
import { qwex, sandbox, type Sandbox } from './helpers.js';

export interface CloudUser extends Sandbox {
  config: string;
  runDir(id: string): string;
  record(id: string): Run;
  /** Every file of the user's qwex state and runs, as text: for checking that a secret appears nowhere. */
  everything(): string;
}

/** A sandbox whose config directory (XDG_CONFIG_HOME) is its own, with direct-mode runs (a monitor each). */
export function cloudUser(): CloudUser {
  const sb = sandbox();
  const config = join(sb.project, '..', 'config');
  mkdirSync(config, { recursive: true });
  Object.assign(sb.env, { XDG_CONFIG_HOME: config, QWEX_NO_DAEMON: '1' });
  const runDir = (id: string): string => join(sb.project, '.qwex', 'runs', id);
  return {
    ...sb,
    config,
    runDir,
    record: (id) => JSON.parse(readFileSync(join(runDir(id), 'run.json'), 'utf8')) as Run,
    everything: () => [sb.state, join(sb.project, '.qwex')].flatMap((dir) => filesUnder(dir)).map((f) => readFileSync(f).toString('latin1')).join('\n'),
  };
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

/** `qwex login URL --token TOKEN` in the user's sandbox; throws when it fails. */
export async function login(user: CloudUser, url: string, token: string): Promise<void> {
  const r = await qwex(user, ['login', url, '--token', token]);
  if (r.exitCode !== 0) throw new Error(`qwex login failed (${r.exitCode}): ${r.stderr}`);
}

export interface Relay {
  url: string;
  /** Connections made through it so far. */
  connections: number;
  /** Destroys every open connection, both ways (what a dropped network does to them). */
  cut(): void;
  /** From now on, a request that starts with this text is held: its bytes are never passed on. */
  holdRequests(prefix: string): void;
  /** Requests held so far. */
  held: number;
  close(): Promise<void>;
}

/** A TCP relay on 127.0.0.1 to `target` (an http://host:port URL). */
export async function startRelay(target: string): Promise<Relay> {
  const { hostname, port } = new URL(target);
  const pairs = new Set<[Socket, Socket]>();
  let hold: string | undefined;
  const relay = {
    url: '',
    connections: 0,
    held: 0,
    cut: () => {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    holdRequests: (prefix: string) => {
      hold = prefix;
    },
    close: async () => {
      relay.cut();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer((client) => {
    relay.connections++;
    const upstream = createConnection({ host: hostname, port: Number(port) });
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    let holding = false;
    client.on('data', (chunk: Buffer) => {
      if (!holding && hold !== undefined && chunk.toString('latin1').startsWith(hold)) {
        holding = true;
        relay.held++;
      }
      if (!holding) upstream.write(chunk);
    });
    upstream.pipe(client);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  relay.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return relay;
}
