/**
 * A throwaway PostgreSQL server for one test file: a fresh cluster made with
 * Debian's initdb in a temporary directory, started with pg_ctl on a free
 * port on 127.0.0.1 (as the postgres user when the tests run as root: the
 * server refuses to run as root), each suite in its own database, and
 * stopped and removed at the end. Nothing touches a system cluster.
 */
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

export interface PostgresServer {
  port: number;
  /** Creates a database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

const BASE = '/usr/lib/postgresql';

function binDir(): string | undefined {
  if (!existsSync(BASE)) return undefined;
  const versions = readdirSync(BASE).filter((v) => existsSync(join(BASE, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(BASE, versions[0], 'bin');
}

/** Why PostgreSQL tests cannot run here, or undefined when they can. */
export function postgresUnavailable(): string | undefined {
  return binDir() === undefined ? `PostgreSQL is not installed (no ${BASE}/*/bin/initdb); apt-get install -y postgresql` : undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startPostgres(): Promise<PostgresServer> {
  const bin = binDir();
  if (!bin) throw new Error(postgresUnavailable());
  const dir = mkdtempSync(join(tmpdir(), 'qwex-pg-'));
  const asRoot = userInfo().uid === 0;
  if (asRoot) {
    const id = await execa('id', ['-u', 'postgres'], { reject: false });
    if (id.exitCode !== 0) throw new Error('running as root but there is no postgres user to run PostgreSQL as');
    const gid = await execa('id', ['-g', 'postgres']);
    chownSync(dir, Number(id.stdout), Number(gid.stdout));
  }
  const run = (file: string, args: string[]) =>
    asRoot ? execa('runuser', ['-u', 'postgres', '--', join(bin, file), ...args], { cwd: dir }) : execa(join(bin, file), args, { cwd: dir });
  const data = join(dir, 'data');
  await run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const port = await freePort();
  // fsync off: a test cluster need not survive a power loss, and it keeps 2 shared cores free.
  await run('pg_ctl', ['-D', data, '-l', join(dir, 'server.log'), '-w', '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`, 'start']);
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    port,
    async createDatabase(name: string): Promise<string> {
      const { default: pg } = await import('pg');
      const client = new pg.Client({ connectionString: admin });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE "${name.replace(/"/g, '')}"`);
      } finally {
        await client.end();
      }
      return `postgres://postgres@127.0.0.1:${port}/${encodeURIComponent(name)}`;
    },
    async stop(): Promise<void> {
      await run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
