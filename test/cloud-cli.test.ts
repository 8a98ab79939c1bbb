/**
 * The qwexcloud program itself: its commands and their errors, its
 * configuration file, migrations on both databases, HTTPS with
 * --tls-cert/--tls-key, and the OpenAPI document it serves (which must be
 * docs/cloud-api.json: `npm run openapi` rewrites that file).
 */
import { readFileSync, mkdtempSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DATABASES, closeDatabases, databaseUrl, qwexcloud, rawRequest, skipWithoutDatabase, startCloud } from './cloud.js';
import { ROOT } from './helpers.js';

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'qwexcloud-cli-'));
});
afterAll(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await closeDatabases();
});

describe('qwexcloud commands', () => {
  it('bad flags and bad configuration exit 2 naming what is wrong; nothing starts', async () => {
    const data = join(scratch, 'bad');
    const cases: { args: string[]; config?: string; message: RegExp }[] = [
      { args: ['serve', '--listen', 'localhost'], message: /--listen: "localhost" is not HOST:PORT/ },
      { args: ['serve', '--target', 'ssh'], message: /--target: "ssh" is not BACKEND or NAME=BACKEND/ },
      { args: ['serve', '--tls-cert', 'x.pem'], message: /--tls-cert and --tls-key go together/ },
      { args: ['serve', '--db', 'mysql://x'], message: /--db: expected sqlite:PATH or postgres:/ },
      { args: ['serve', '--concurrency', '0'], message: /--concurrency: "0" is not a whole number/ },
      { args: ['serve'], config: 'targets:\n  - name: a\n    backend: local\n    colour: red\n', message: /targets\.0\.colour: unknown key/ },
      { args: ['serve'], config: 'targets:\n  - { name: a, backend: local }\n  - { name: a, backend: docker }\n', message: /two targets are named "a"/ },
      { args: ['serve'], config: 'listen: [1, 2\n', message: /invalid YAML/ },
      { args: ['token', 'create'], message: /required option '--user <name>'/ },
      { args: ['token', 'create', '--user', 'Not A Name'], message: /"Not A Name" is not a user name/ },
    ];
    for (const c of cases) {
      const args = [...c.args, '--data', data];
      if (c.config !== undefined) {
        writeFileSync(join(scratch, 'bad.yaml'), c.config);
        args.push('--config', join(scratch, 'bad.yaml'));
      }
      const r = await qwexcloud(args);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(String(r.stderr)).toMatch(c.message);
      expect(String(r.stdout)).toBe('');
    }
    const missing = await qwexcloud(['token', 'revoke', 'nobody', '--data', data]);
    expect(missing.exitCode).toBe(1);
    expect(String(missing.stderr)).toMatch(/no token or user "nobody"/);
  });

  it('the configuration file sets targets, limits and where to listen; flags win over it', async () => {
    const config = `listen: 127.0.0.1:1\ntargets:\n  - name: here\n    backend: local\n    labels: { site: a }\nlimits:\n  rate_max: 1000\n`;
    const server = await startCloud({ db: 'sqlite', config });
    try {
      // --listen 127.0.0.1:0 from the harness won over the file's port 1.
      expect(new URL(server.url).port).not.toBe('1');
      const client = server.client(await server.token('ann'));
      expect(await client.targets()).toEqual([{ name: 'here', backend: 'local', queues: [], labels: { site: 'a' } }]);
      const run = await client.submit({ job: { command: ['true'] } });
      expect(run.target).toBe('here');
      // The data directory is the server's alone.
      expect(statSync(server.data).mode & 0o777).toBe(0o700);
    } finally {
      await server.cleanup();
    }
  });

  it('serves the OpenAPI document that docs/cloud-api.json holds, and `qwexcloud openapi` prints it', async () => {
    const server = await startCloud({ db: 'sqlite' });
    try {
      const token = await server.token('ann');
      const served = (await rawRequest(server.url, { path: '/v1/openapi.json', headers: { authorization: `Bearer ${token}` } })).json();
      const committed = JSON.parse(readFileSync(join(ROOT, 'docs', 'cloud-api.json'), 'utf8'));
      expect(served, 'docs/cloud-api.json is out of date: run `npm run openapi`').toEqual(committed);
      expect(Object.keys(served.paths)).toEqual(expect.arrayContaining(['/v1/runs', '/v1/runs/{id}/logs', '/v1/blobs/missing', '/v1/events']));
      const printed = await qwexcloud(['openapi']);
      expect(JSON.parse(String(printed.stdout))).toEqual(committed);
      // The root page says what this is, for a person who opens it in a browser.
      expect((await rawRequest(server.url, { path: '/' })).json()).toMatchObject({ name: 'qwexcloud', api: '/v1' });
    } finally {
      await server.cleanup();
    }
  });

  it('--tls-cert and --tls-key serve HTTPS', async () => {
    const key = join(scratch, 'key.pem');
    const cert = join(scratch, 'cert.pem');
    await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const server = await startCloud({ db: 'sqlite', args: ['--tls-cert', cert, '--tls-key', key] });
    try {
      expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:/);
      const body = await new Promise<string>((resolve, reject) => {
        const req = request(`${server.url}/v1/health`, { ca: readFileSync(cert) }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve(text));
        });
        req.on('error', reject);
        req.end();
      });
      expect(JSON.parse(body)).toMatchObject({ status: 'ok' });
      // Plain HTTP to the HTTPS port gets no API answer.
      const plain = await rawRequest(server.url.replace('https:', 'http:'), { path: '/v1/health' }).catch((e: Error) => e);
      expect(plain instanceof Error || plain.status === 400).toBe(true);
    } finally {
      await server.cleanup();
    }
  });
});

for (const kind of DATABASES) {
  describe(`qwexcloud migrate with ${kind}`, () => {
    beforeEach((ctx) => skipWithoutDatabase(ctx, kind));

    it('creates the schema once, then finds it up to date; token commands work on it', async () => {
      const data = mkdtempSync(join(scratch, 'migrate-'));
      const db = await databaseUrl(kind, data);
      const first = await qwexcloud(['migrate', '--data', data, '--db', db]);
      expect(first.exitCode, String(first.stderr)).toBe(0);
      expect(String(first.stderr)).toMatch(/applied 0001-initial/);
      const second = await qwexcloud(['migrate', '--data', data, '--db', db]);
      expect(String(second.stderr)).toMatch(/is up to date/);
      const created = await qwexcloud(['token', 'create', '--user', 'ops', '--admin', '--data', data, '--db', db]);
      expect(created.exitCode).toBe(0);
      const list = JSON.parse(String((await qwexcloud(['token', 'list', '--json', '--data', data, '--db', db])).stdout)) as { id: string; user: string; admin: boolean; revokedAt: string | null }[];
      expect(list).toEqual([expect.objectContaining({ user: 'ops', admin: true, revokedAt: null })]);
      const revoked = await qwexcloud(['token', 'revoke', list[0]!.id, '--data', data, '--db', db]);
      expect(String(revoked.stderr)).toContain(`revoked ${list[0]!.id}`);
      const again = await qwexcloud(['token', 'revoke', list[0]!.id, '--data', data, '--db', db]);
      expect(String(again.stderr)).toMatch(/nothing to revoke/);
    });
  });
}
