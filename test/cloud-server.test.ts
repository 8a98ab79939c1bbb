/**
 * qwexcloud as a team would use it: the built server as a real process on
 * 127.0.0.1, real HTTP, its own CLI for tokens, runs on the server's host
 * (the local target), and the same suite against SQLite and against a real
 * PostgreSQL (a throwaway cluster: test/postgres.ts; skipped with the reason
 * unless QWEX_REQUIRE_POSTGRES=1, which makes its absence a failure).
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CloudRun, CloudRunDetail } from '../src/cloud/api.js';
import type { CloudClient } from '../src/cloud/client.js';
import { QwexError } from '../src/errors.js';
import { ContentStore } from '../src/workspace/snapshot.js';
import { openDatabase } from '../server/db/connect.js';
import {
  DATABASES,
  closeDatabases,
  openEventStream,
  qwexcloud,
  rawRequest,
  serverArgs,
  skipWithoutDatabase,
  startCloud,
  type CloudServer,
} from './cloud.js';
import { postgresUnavailable } from './postgres.js';
import { until } from './helpers.js';

const LIMITS = `
limits:
  body_bytes: 65536
  submit_bytes: 262144
  upload_bytes: 65536
  rate_max: 600
  rate_window_seconds: 60
`;

const TRAIN = `echo "lr=$LR"
cat data/input.txt
echo "to stderr" >&2
mkdir -p out
printf '\\000\\001\\002binary\\377' > out/model.bin
echo "epoch 1" > out/notes.txt
exit 3
`;

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<QwexError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, `expected ${code}`).toBeInstanceOf(QwexError);
  expect((error as QwexError).code).toBe(code);
  return error as QwexError;
}

/** Follows the run's stdout to its end; returns what it printed and the final run. */
async function finish(client: CloudClient, id: string): Promise<{ stdout: Buffer; run: CloudRunDetail }> {
  const chunks: Buffer[] = [];
  const result = await client.followLogs(id, { onData: (c) => void chunks.push(c) });
  expect(result.run).toBeDefined();
  return { stdout: Buffer.concat(chunks), run: result.run! };
}

afterAll(async () => {
  await closeDatabases();
});

for (const kind of DATABASES) {
  describe(`qwexcloud with ${kind}`, () => {
    let server: CloudServer;
    let alice: CloudClient;
    let bob: CloudClient;
    let root: CloudClient;
    let aliceToken: string;
    let rootToken: string;
    let project: string;
    let store: ContentStore;
    let scratch: string;

    beforeAll(async () => {
      if (kind === 'postgres' && postgresUnavailable()) return;
      server = await startCloud({ db: kind, targets: ['local'], config: LIMITS });
      aliceToken = await server.token('alice');
      alice = server.client(aliceToken);
      bob = server.client(await server.token('bob'));
      rootToken = await server.token('root', true);
      root = server.client(rootToken);
      scratch = mkdtempSync(join(tmpdir(), 'qwexcloud-client-'));
      project = join(scratch, 'project');
      mkdirSync(join(project, 'data'), { recursive: true });
      mkdirSync(join(project, 'big'), { recursive: true });
      writeFileSync(join(project, 'train.sh'), TRAIN);
      chmodSync(join(project, 'train.sh'), 0o755);
      writeFileSync(join(project, 'data', 'input.txt'), 'the input\n');
      writeFileSync(join(project, '.gitignore'), 'big/\n');
      writeFileSync(join(project, 'big', 'dataset.bin'), Buffer.alloc(1024, 7));
      store = new ContentStore(join(scratch, 'client-store'));
    });

    afterAll(async () => {
      await server?.cleanup();
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    });

    beforeEach((ctx) => skipWithoutDatabase(ctx, kind));

    it('health needs no token; every other route is 401 without one, with a malformed header, an unknown token or a revoked one', async () => {
      expect((await rawRequest(server.url, { path: '/v1/health' })).json()).toMatchObject({ status: 'ok' });
      for (const headers of [{}, { authorization: 'Basic YWxpY2U6eA==' }, { authorization: 'Bearer' }, { authorization: `Bearer qwx_${'A'.repeat(43)}` }, { authorization: 'Bearer not-a-token' }]) {
        for (const path of ['/v1/runs', '/v1/me', '/v1/openapi.json', '/v1/events', `/v1/runs/${'0'.repeat(8)}-0000-7000-8000-${'0'.repeat(12)}/logs?follow=1`]) {
          const r = await rawRequest(server.url, { path, headers });
          expect(r.status, `${path} with ${JSON.stringify(headers)}`).toBe(401);
          expect(r.json().error.code).toBe('QWEX_UNAUTHORIZED');
        }
      }
      const token = await server.token('carol');
      const carol = server.client(token);
      expect(await carol.me()).toMatchObject({ user: 'carol', admin: false });
      const revoked = await qwexcloud(['token', 'revoke', 'carol', ...serverArgs(server)]);
      expect(revoked.exitCode).toBe(0);
      const error = await expectCode(carol.me(), 'QWEX_UNAUTHORIZED');
      expect(error.message).toMatch(/unknown or was revoked/);
      expect(error.message).not.toContain(token);
      // A revoked token is refused everywhere, not only where it was last checked.
      expect((await rawRequest(server.url, { path: '/v1/runs', headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    });

    it('token create prints the token alone, once; the database keeps only its sha256; the log never shows one', async () => {
      const created = await qwexcloud(['token', 'create', '--user', 'dave', ...serverArgs(server)]);
      expect(created.exitCode).toBe(0);
      const token = String(created.stdout);
      expect(token).toMatch(/^qwx_[A-Za-z0-9_-]{43}$/); // alone: one line, nothing else
      expect(String(created.stderr)).not.toContain(token.trim());
      const list = await qwexcloud(['token', 'list', '--json', ...serverArgs(server)]);
      const tokens = JSON.parse(String(list.stdout)) as { id: string; user: string; lastUsedAt: string | null }[];
      expect(tokens.map((t) => t.user)).toEqual(expect.arrayContaining(['alice', 'bob', 'root', 'dave']));
      expect(String(list.stdout)).not.toContain(token.trim());
      const db = await openDatabase(server.db);
      try {
        const rows = await db.db.selectFrom('tokens').selectAll().where('user_name', '=', 'dave').execute();
        expect(rows).toHaveLength(1);
        expect(rows[0]!.hash).toBe(sha256(token.trim()));
        expect(JSON.stringify(rows)).not.toContain(token.trim());
        await server.client(token.trim()).me();
        const used = await db.db.selectFrom('tokens').select('last_used_at').where('user_name', '=', 'dave').executeTakeFirstOrThrow();
        expect(used.last_used_at).not.toBeNull();
      } finally {
        await db.close();
      }
      expect(server.output()).not.toContain(token.trim());
      expect(server.output()).not.toContain(aliceToken);
    });

    it('a run submitted through the API runs in its own copy of the workspace and ends with its exit code, logs and artifacts', async () => {
      const { run: submitted, uploaded } = await alice.submitProject(project, { command: ['sh', 'train.sh'], env: { LR: '0.1', API_TOKEN: 'hunter2' }, name: 'train-a' }, { store });
      expect(uploaded.files).toBe(3); // train.sh, data/input.txt, .gitignore; big/ is ignored and stays here
      expect(submitted).toMatchObject({ user: 'alice', target: 'local', backend: 'local', name: 'train-a' });
      // A run this short may have ended by the time the answer is written.
      expect(['pending', 'running', 'failed']).toContain(submitted.status);
      expect(submitted.record.job.env.API_TOKEN).toBe('***');
      const { stdout, run } = await finish(alice, submitted.id);
      expect(stdout.toString()).toBe('lr=0.1\nthe input\n');
      expect(run).toMatchObject({ status: 'failed', exitCode: 3, endReason: 'exit', signal: null });
      expect((await alice.logs(run.id, 'stderr')).toString()).toBe('to stderr\n');
      expect((await alice.logs(run.id, 'stdout', 3)).toString()).toBe('0.1\nthe input\n');
      const listed = await alice.artifacts(run.id);
      const model = Buffer.from('\x00\x01\x02binary\xff', 'latin1');
      expect(listed.artifacts).toEqual([
        { path: 'out/model.bin', size: model.length, sha256: sha256(model) },
        { path: 'out/notes.txt', size: 8, sha256: sha256('epoch 1\n') },
      ]);
      const chunks: Buffer[] = [];
      for await (const chunk of await alice.artifact(run.id, 'out/model.bin')) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).equals(model)).toBe(true);
      await expectCode(alice.artifact(run.id, 'out/none.bin'), 'QWEX_NOT_FOUND');
      // The ignored directory was not sent: the run never saw it.
      const detail = await alice.get(run.id);
      expect(detail.record.artifacts).toMatchObject({ count: 2 });
    });

    it('an unchanged second submit uploads nothing; a changed file is the only upload', async () => {
      const first = await alice.submitProject(project, { command: ['sh', 'train.sh'], env: { LR: '1' } }, { store });
      const second = await alice.submitProject(project, { command: ['sh', 'train.sh'], env: { LR: '2' } }, { store });
      expect(second.uploaded).toEqual({ files: 0, bytes: 0 });
      expect(second.run.record.job.workspace!.manifest).toBe(first.run.record.job.workspace!.manifest);
      writeFileSync(join(project, 'data', 'input.txt'), 'changed input\n');
      const third = await alice.submitProject(project, { command: ['sh', 'train.sh'], env: { LR: '3' } }, { store });
      expect(third.uploaded).toEqual({ files: 1, bytes: 'changed input\n'.length });
      expect((await finish(alice, third.run.id)).stdout.toString()).toBe('lr=3\nchanged input\n');
      // Another user with the same files uploads nothing either: content is stored once for the server.
      expect((await bob.submitProject(project, { command: ['true'] }, { store })).uploaded.files).toBe(0);
      writeFileSync(join(project, 'data', 'input.txt'), 'the input\n');
    });

    it('another user cannot see, follow, cancel, rerun or download a run (404), nor find it listed; an admin can', async () => {
      const { run } = await alice.submitProject(project, { command: ['sh', '-c', 'mkdir -p out && echo secret > out/s.txt && sleep 30'] }, { store });
      await until(async () => ((await alice.get(run.id)).status === 'running' ? true : undefined), 20_000, 'the run to start');
      const id = run.id;
      for (const attempt of [() => bob.get(id), () => bob.cancel(id), () => bob.rerun(id), () => bob.artifacts(id), () => bob.logs(id), () => bob.followLogs(id, { onData: () => {} })]) {
        const error = await expectCode(attempt(), 'QWEX_RUN_NOT_FOUND');
        expect(error.message).toBe(`no run ${id}`); // exactly what a run that does not exist gets
      }
      const missing = '01000000-0000-7000-8000-000000000000';
      expect((await expectCode(bob.get(missing), 'QWEX_RUN_NOT_FOUND')).message).toBe(`no run ${missing}`);
      expect((await bob.list()).runs.some((r) => r.id === id)).toBe(false);
      await expectCode(bob.list({ user: 'alice' }), 'QWEX_FORBIDDEN'); // the filter is an admin's; it says nothing about alice's runs
      expect((await bob.list({ user: 'bob' })).runs.every((r) => r.user === 'bob')).toBe(true);
      expect((await alice.get(id)).status).toBe('running'); // bob's cancel did nothing
      expect((await root.get(id)).user).toBe('alice');
      expect((await root.list({ user: 'alice' })).runs.map((r) => r.id)).toContain(id);
      const cancelled = await root.cancel(id, 500);
      expect(cancelled.id).toBe(id);
      const { run: final } = await finish(alice, id);
      expect(final.status).toBe('cancelled');
      await expectCode(alice.cancel(id), 'QWEX_RUN_NOT_ACTIVE');
      // Downloading needs the artifact to exist for this user: bob still gets 404 after the end.
      const path = `/v1/runs/${id}/artifacts/out/s.txt`;
      const bobToken = (bob as unknown as { token: string }).token;
      expect((await rawRequest(server.url, { path, headers: { authorization: `Bearer ${bobToken}` } })).status).toBe(404);
      const rerun = await root.rerun(id);
      expect(rerun.user).toBe('root');
      // A cancel needs no body (curl -X POST .../cancel).
      const plain = await rawRequest(server.url, { method: 'POST', path: `/v1/runs/${rerun.id}/cancel`, headers: { authorization: `Bearer ${rootToken}` } });
      expect(plain.status, plain.body).toBe(202);
      expect((await finish(root, rerun.id)).run.status).toBe('cancelled');
    });

    it('a follower cut mid-stream resumes with Last-Event-ID, with nothing lost or doubled', async () => {
      const script = 'i=0; while [ $i -lt 400 ]; do echo "line $i of the log: $(printf %060d $i)"; i=$((i+1)); if [ $((i % 20)) -eq 0 ]; then sleep 0.05; fi; done; printf "\\000\\377no newline at the end"';
      const { run } = await alice.submitProject(project, { command: script, shell: true }, { store });
      const auth = { authorization: `Bearer ${aliceToken}` };
      const first = await openEventStream(server.url, `/v1/runs/${run.id}/logs?follow=1`, auth);
      expect(first.status).toBe(200);
      expect(first.headers['content-type']).toMatch(/^text\/event-stream/);
      await until(() => (first.events.filter((e) => e.event === 'chunk').length >= 2 ? true : undefined), 20_000, 'two chunks');
      first.cut();
      await first.ended;
      const before = first.events.filter((e) => e.event === 'chunk');
      const lastId = before[before.length - 1]!.id!;
      let offset = 0;
      const received: Buffer[] = [];
      for (const e of before) {
        const chunk = Buffer.from(e.data, 'base64');
        expect(Number(e.id) - chunk.length).toBe(offset);
        offset = Number(e.id);
        received.push(chunk);
      }
      const second = await openEventStream(server.url, `/v1/runs/${run.id}/logs?follow=1`, { ...auth, 'last-event-id': lastId });
      await second.ended;
      const after = second.events.filter((e) => e.event === 'chunk');
      expect(Number(after[0]!.id) - Buffer.from(after[0]!.data, 'base64').length).toBe(Number(lastId));
      for (const e of after) {
        const chunk = Buffer.from(e.data, 'base64');
        expect(Number(e.id) - chunk.length).toBe(offset);
        offset = Number(e.id);
        received.push(chunk);
      }
      const end = second.events[second.events.length - 1]!;
      expect(end.event).toBe('end');
      expect(JSON.parse(end.data)).toMatchObject({ id: run.id, status: 'succeeded', exitCode: 0 });
      const whole = await alice.logs(run.id, 'stdout');
      expect(Buffer.concat(received).equals(whole)).toBe(true);
      expect(whole.length).toBeGreaterThan(400 * 70);
      const tail = Buffer.concat([Buffer.from([0, 255]), Buffer.from('no newline at the end')]);
      expect(whole.subarray(-tail.length).equals(tail)).toBe(true);

      // The client does the same by itself: a connection cut after a few KB is resumed where it stopped.
      let cuts = 0;
      const cutting: typeof fetch = async (input, init) => {
        const response = await fetch(input, init);
        if (!String(input).includes('/logs?') || cuts > 0 || !response.body) return response;
        cuts++;
        const reader = response.body.getReader();
        let seen = 0;
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            const { done, value } = await reader.read();
            if (done) return controller.close();
            // Cut at 4000 bytes whatever the size of the chunks fetch delivers: Node 24's can hold the whole log.
            const room = 4000 - seen;
            seen += value.length;
            if (value.length <= room) return controller.enqueue(value);
            controller.enqueue(value.subarray(0, room));
            controller.error(new TypeError('terminated'));
            await reader.cancel();
          },
        });
        return new Response(body, { status: response.status, headers: response.headers });
      };
      const chunks: Buffer[] = [];
      const followed = await server.client(aliceToken, cutting).followLogs(run.id, { onData: (c) => void chunks.push(c) });
      expect(cuts).toBe(1);
      expect(followed.resumed).toBe(1);
      expect(Buffer.concat(chunks).equals(whole)).toBe(true);
      // Not following: what there is, then `eof`.
      const eof = await openEventStream(server.url, `/v1/runs/${run.id}/logs?stream=stderr`, auth);
      await eof.ended;
      expect(eof.events.map((e) => e.event)).toEqual(['eof']);
    });

    it('listing pages by cursor, newest first, and filters by status, target, backend, time and text; SQL metacharacters are data', async () => {
      const erin = server.client(await server.token('erin'));
      const names = ['50% off', 'under_score', "it's quoted", 'plain', 'back\\slash'];
      const ids: string[] = [];
      for (const name of names) ids.push((await erin.submit({ job: { command: ['true'], name } })).id);
      for (const id of ids) await finish(erin, id);
      const all = [];
      let cursor: string | undefined;
      do {
        const page = await erin.list({ limit: 2, ...(cursor ? { cursor } : {}) });
        expect(page.runs.length).toBeLessThanOrEqual(2);
        all.push(...page.runs);
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      expect(all.map((r) => r.id)).toEqual([...ids].reverse());
      const fromGenerator: string[] = [];
      for await (const r of erin.listAll({ limit: 3 })) fromGenerator.push(r.id);
      expect(fromGenerator).toEqual([...ids].reverse());
      const named = async (q: string): Promise<string[]> => (await erin.list({ q })).runs.map((r) => r.name ?? '');
      expect(await named('%')).toEqual(['50% off']);
      expect(await named('_')).toEqual(['under_score']);
      expect(await named("'")).toEqual(["it's quoted"]);
      expect(await named('\\')).toEqual(['back\\slash']);
      expect(await named('PLAIN')).toEqual(['plain']);
      expect(await named("' OR '1'='1")).toEqual([]);
      expect((await erin.list({ target: "local' OR 1=1 --" })).runs).toEqual([]);
      expect((await erin.list({ backend: 'local"; DROP TABLE runs; --' })).runs).toEqual([]);
      expect((await erin.list({ status: ['succeeded'], target: 'local', backend: 'local' })).runs).toHaveLength(5);
      expect((await erin.list({ status: ['failed', 'cancelled'] })).runs).toHaveLength(0);
      const middle = all.find((r) => r.id === ids[2])!;
      expect((await erin.list({ createdAfter: middle.createdAt })).runs.map((r) => r.id)).toEqual(expect.arrayContaining([ids[2], ids[3], ids[4]]));
      expect((await erin.list({ createdBefore: '2000-01-01T00:00:00Z' })).runs).toEqual([]);
      expect((await erin.list({ idPrefix: ids[0]!.slice(0, 30) })).runs.map((r) => r.id)).toEqual([ids[0]]);
      // Nothing was dropped or changed by the hostile filters.
      expect((await erin.list()).runs).toHaveLength(5);
    });

    it('the change feed shows each user their own runs changing and nobody else\'s', async () => {
      const seenByAlice: CloudRun[] = [];
      const seenByBob: CloudRun[] = [];
      const abort = new AbortController();
      let open = 0;
      const feeds = [
        alice.events({ onRun: (r) => void seenByAlice.push(r), onOpen: () => void open++, signal: abort.signal }),
        bob.events({ onRun: (r) => void seenByBob.push(r), onOpen: () => void open++, signal: abort.signal }),
      ];
      await until(() => (open === 2 ? true : undefined), 10_000, 'both feeds to open');
      const a = await alice.submit({ job: { command: ['true'] } });
      await until(() => (seenByAlice.some((r) => r.id === a.id && r.status === 'succeeded') ? true : undefined), 20_000, 'alice to see her run end');
      const b = await bob.submit({ job: { command: ['true'] } });
      await until(() => (seenByBob.some((r) => r.id === b.id && r.status === 'succeeded') ? true : undefined), 20_000, 'bob to see his run end');
      abort.abort();
      await Promise.allSettled(feeds);
      expect(seenByAlice.map((r) => r.status)).toEqual(expect.arrayContaining(['pending', 'succeeded']));
      expect(seenByBob.every((r) => r.user === 'bob')).toBe(true);
      expect(seenByAlice.every((r) => r.user === 'alice')).toBe(true);
    });

    it('many idle followers do not hold up submissions, and each gets the end of its run', async () => {
      const frank = server.client(await server.token('frank'));
      const frankToken = (frank as unknown as { token: string }).token;
      const sleeper = await frank.submit({ job: { command: ['sleep', '60'] } });
      await until(async () => ((await frank.get(sleeper.id)).status === 'running' ? true : undefined), 20_000, 'the sleeper to start');
      const followers = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          openEventStream(server.url, `/v1/runs/${sleeper.id}/logs?follow=1&stream=${i % 2 ? 'stdout' : 'stderr'}`, { authorization: `Bearer ${frankToken}` }),
        ),
      );
      expect(followers.every((f) => f.status === 200)).toBe(true);
      for (let i = 0; i < 5; i++) {
        const run = await frank.submit({ job: { command: ['sh', '-c', `echo run ${i}`] } });
        expect((await finish(frank, run.id)).stdout.toString()).toBe(`run ${i}\n`);
      }
      await frank.cancel(sleeper.id, 100);
      await Promise.all(followers.map((f) => f.ended));
      for (const f of followers) {
        const last = f.events[f.events.length - 1]!;
        expect(last.event).toBe('end');
        expect(JSON.parse(last.data).status).toBe('cancelled');
      }
    });

    it('history survives a restart and a crash; runs active across them are re-adopted and end with their true outcome in SQL', async () => {
      const done = await alice.submitProject(project, { command: ['sh', 'train.sh'], env: { LR: 'r' } }, { store });
      const { run: ended } = await finish(alice, done.run.id);
      const artifacts = await alice.artifacts(ended.id);
      const slow = await alice.submit({ job: { command: ['sh', '-c', 'sleep 2; echo late; exit 7'] } });
      await until(async () => ((await alice.get(slow.id)).status === 'running' ? true : undefined), 20_000, 'the slow run to start');
      await server.restart();
      const afterRestart = await alice.get(ended.id);
      expect(afterRestart).toMatchObject({ status: 'failed', exitCode: 3, finishedAt: ended.finishedAt });
      expect(await alice.artifacts(ended.id)).toEqual(artifacts);
      expect((await alice.logs(ended.id)).toString()).toBe('lr=r\nthe input\n');
      const { stdout, run: slowEnd } = await finish(alice, slow.id);
      expect(slowEnd).toMatchObject({ status: 'failed', exitCode: 7 });
      expect(stdout.toString()).toBe('late\n');

      const crashing = await alice.submit({ job: { command: ['sh', '-c', 'sleep 2; mkdir -p out; echo kept > out/k.txt; exit 5'] } });
      await until(async () => ((await alice.get(crashing.id)).status === 'running' ? true : undefined), 20_000, 'the run to start');
      await server.restart({ signal: 'SIGKILL' });
      const { run: afterCrash } = await finish(alice, crashing.id);
      expect(afterCrash).toMatchObject({ status: 'failed', exitCode: 5 });
      expect((await alice.artifacts(crashing.id)).artifacts.map((a) => a.path)).toEqual(['out/k.txt']);
      // The target goes from the configuration: its runs' history stays; running them again is refused, saying why.
      await server.restart({ targets: ['elsewhere=local'] });
      expect(await alice.get(ended.id)).toMatchObject({ target: 'local', status: 'failed', exitCode: 3 });
      expect((await alice.list({ target: 'local' })).runs.map((r) => r.id)).toEqual(expect.arrayContaining([ended.id, slow.id, crashing.id]));
      expect((await alice.logs(slow.id)).toString()).toBe('late\n');
      expect(await alice.artifacts(ended.id)).toEqual(artifacts);
      expect((await expectCode(alice.rerun(ended.id), 'QWEX_USAGE')).message).toMatch(/target "local" is no longer configured/);
      expect((await alice.submit({ job: { command: ['true'] } })).target).toBe('elsewhere');
      await server.restart({ targets: ['local'] });
      const db = await openDatabase(server.db);
      try {
        const row = await db.db.selectFrom('runs').selectAll().where('id', '=', crashing.id).executeTakeFirstOrThrow();
        expect(row).toMatchObject({ status: 'failed', exit_code: 5, artifacts_collected: 1 });
        expect(JSON.parse(row.record).status).toBe('failed');
      } finally {
        await db.close();
      }
    });

    it('hostile input gets 4xx and changes nothing', async () => {
      const auth = { authorization: `Bearer ${aliceToken}` };
      const json = { ...auth, 'content-type': 'application/json' };
      const before = (await alice.list({ limit: 500 })).runs.length;
      const dirs = readdirSync(join(server.data, 'runs', 'alice', 'local', '.qwex', 'runs')).length;
      const cases: { what: string; method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer; status: number; code: string; message?: RegExp }[] = [
        { what: 'a body over the limit', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'], name: 'x'.repeat(300_000) } }), status: 413, code: 'QWEX_TOO_LARGE' },
        { what: 'bad JSON', method: 'POST', path: '/v1/runs', headers: json, body: '{"job": {"command": ["true"]', status: 400, code: 'QWEX_USAGE', message: /not valid JSON/ },
        { what: 'an unknown key', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'], mounts: ['/:/host'] } }), status: 400, code: 'QWEX_USAGE', message: /additional properties/ },
        { what: 'no command', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: {} }), status: 400, code: 'QWEX_USAGE', message: /command/ },
        { what: 'a wrong content type', method: 'POST', path: '/v1/runs', headers: { ...auth, 'content-type': 'text/plain' }, body: 'true', status: 400, code: 'QWEX_USAGE' },
        { what: '"../" in a run id', path: '/v1/runs/..%2F..%2Fetc%2Fpasswd', headers: auth, status: 400, code: 'QWEX_USAGE' },
        { what: '"../" in a raw path', path: '/v1/runs/../../etc/passwd', headers: auth, status: 404, code: 'QWEX_NOT_FOUND' },
        { what: '"../" in a log stream', path: '/v1/runs/01000000-0000-7000-8000-000000000000/logs/..%2Frun.json', headers: auth, status: 400, code: 'QWEX_USAGE' },
        { what: 'a bad Last-Event-ID', path: '/v1/runs/01000000-0000-7000-8000-000000000000/logs', headers: { ...auth, 'last-event-id': '1; DROP TABLE runs' }, status: 400, code: 'QWEX_USAGE' },
        { what: 'a bad filter', path: '/v1/runs?status=done', headers: auth, status: 400, code: 'QWEX_USAGE' },
        { what: 'a bad cursor', path: '/v1/runs?cursor=%27%20OR%201%3D1', headers: auth, status: 400, code: 'QWEX_USAGE' },
        { what: 'a bad limit', path: '/v1/runs?limit=100000', headers: auth, status: 400, code: 'QWEX_USAGE' },
        { what: 'a path outside the workspace', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'] }, workspace: { files: [{ path: '../escape.sh', size: 1, mode: 0o644, sha256: sha256('x') }], symlinks: [] } }), status: 400, code: 'QWEX_USAGE', message: /inside the workspace/ },
        { what: 'an absolute path', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'] }, workspace: { files: [], symlinks: [{ path: '/etc/cron.d/x', target: '/tmp' }] } }), status: 400, code: 'QWEX_USAGE' },
        { what: 'content never uploaded', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'] }, workspace: { files: [{ path: 'a', size: 1, mode: 0o644, sha256: sha256('never sent') }], symlinks: [] } }), status: 400, code: 'QWEX_BLOB_MISSING' },
        { what: 'a cwd outside the workspace', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'], cwd: '../..' } }), status: 400, code: 'QWEX_USAGE' },
        { what: 'a watch outside the workspace', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'], watch: ['../../state'] } }), status: 400, code: 'QWEX_USAGE' },
        { what: 'container settings on a local target', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'], container: { image: 'x' } } }), status: 400, code: 'QWEX_USAGE' },
        { what: 'an unknown target', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ target: '../x', job: { command: ['true'] } }), status: 400, code: 'QWEX_USAGE', message: /no target/ },
        { what: 'a bad env name', method: 'POST', path: '/v1/runs', headers: json, body: JSON.stringify({ job: { command: ['true'], env: { 'A=B; rm': 'x' } } }), status: 400, code: 'QWEX_USAGE' },
        { what: 'a bad hash', method: 'PUT', path: '/v1/blobs/..%2F..%2Fx', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: 'x', status: 400, code: 'QWEX_USAGE' },
        { what: 'content under another hash', method: 'PUT', path: `/v1/blobs/${sha256('what it claims')}`, headers: { ...auth, 'content-type': 'application/octet-stream' }, body: 'what it is', status: 400, code: 'QWEX_USAGE', message: /does not match/ },
        { what: 'an upload over the limit', method: 'PUT', path: `/v1/blobs/${sha256(Buffer.alloc(70_000))}`, headers: { ...auth, 'content-type': 'application/octet-stream' }, body: Buffer.alloc(70_000), status: 413, code: 'QWEX_TOO_LARGE' },
        { what: 'an unknown route', path: '/v1/nothing', headers: auth, status: 404, code: 'QWEX_NOT_FOUND' },
      ];
      for (const c of cases) {
        const r = await rawRequest(server.url, { method: c.method ?? 'GET', path: c.path, headers: { ...c.headers, ...(c.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(c.body)) }) }, ...(c.body === undefined ? {} : { body: c.body }) });
        expect(r.status, `${c.what}: ${r.body}`).toBe(c.status);
        const error = r.json().error;
        expect(error.code, c.what).toBe(c.code);
        expect(typeof error.message).toBe('string');
        if (c.message) expect(error.message, c.what).toMatch(c.message);
        expect(r.body).not.toContain(aliceToken);
      }
      // A finished run's artifacts cannot be escaped from either.
      const { run } = await alice.submitProject(project, { command: ['sh', 'train.sh'] }, { store });
      await finish(alice, run.id);
      for (const path of [`/v1/runs/${run.id}/artifacts/..%2F..%2F..%2Fstate%2Findex.db`, `/v1/runs/${run.id}/artifacts/out/..%2F..%2Frun.json`, `/v1/runs/${run.id}/artifacts/%2Fetc%2Fpasswd`, `/v1/runs/${run.id}/artifacts/out//model.bin`]) {
        const r = await rawRequest(server.url, { path, headers: auth });
        expect(r.status, path).toBe(400);
        expect(r.json().error.code).toBe('QWEX_USAGE');
      }
      expect((await rawRequest(server.url, { path: `/v1/runs/${run.id}/artifacts/out/model.bin`, headers: auth })).status).toBe(200);
      // Nothing was recorded or stored: one more run (the one above), no stray run directories, no bad blob.
      expect((await alice.list({ limit: 500 })).runs.length).toBe(before + 1);
      expect(readdirSync(join(server.data, 'runs', 'alice', 'local', '.qwex', 'runs')).length).toBe(dirs + 1);
      expect(await alice.missingBlobs([sha256('what it claims'), sha256('what it is'), sha256(Buffer.alloc(70_000))])).toHaveLength(3);
      expect(existsSync(join(server.data, 'escape.sh'))).toBe(false);
      expect(existsSync(join(server.data, 'runs', 'alice', 'escape.sh'))).toBe(false);
    });

    it('a token over its rate gets 429 with a hint to wait, and other tokens go on', async () => {
      const greta = server.client(await server.token('greta'));
      const results = await Promise.allSettled(Array.from({ length: 620 }, () => greta.me()));
      const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as QwexError);
      expect(refused.length).toBeGreaterThanOrEqual(20);
      expect(refused.every((e) => e.code === 'QWEX_RATE_LIMITED')).toBe(true);
      expect(refused[0]!.hint).toMatch(/retry in/);
      expect((await alice.me()).user).toBe('alice');
    });
  });
}
