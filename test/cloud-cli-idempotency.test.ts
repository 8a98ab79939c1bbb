/**
 * qwexcloud's idempotent submit, which the cloud backend relies on so that
 * a supervisor that died after submitting never makes a second run: the
 * Idempotency-Key of POST /v1/runs, per user, kept in SQL across restarts,
 * against SQLite and a real PostgreSQL (skipped with the reason unless
 * QWEX_REQUIRE_POSTGRES=1).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CloudRunDetail, SubmitRequest } from '../src/cloud/api.js';
import { openDatabase } from '../server/db/connect.js';
import { fingerprintOf } from '../server/submissions.js';
import { DATABASES, closeDatabases, skipWithoutDatabase, startCloud, type CloudServer } from './cloud.js';
import { postgresUnavailable } from './postgres.js';

afterAll(async () => {
  await closeDatabases();
});

for (const kind of DATABASES) {
  describe(`keyed submits with ${kind}`, () => {
    let server: CloudServer | undefined;
    let alice: string;
    let bob: string;

    beforeAll(async () => {
      if (kind === 'postgres' && postgresUnavailable()) return;
      server = await startCloud({ db: kind });
      alice = await server.token('alice');
      bob = await server.token('bob');
    });
    afterAll(async () => {
      await server?.cleanup();
    });
    beforeEach((ctx) => skipWithoutDatabase(ctx, kind));

    const post = async (token: string, body: unknown, key?: string): Promise<{ status: number; body: any }> => {
      const response = await fetch(`${server!.url}/v1/runs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: await response.json() };
    };
    const get = async (token: string, path: string): Promise<{ status: number; body: any }> => {
      const response = await fetch(`${server!.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
      return { status: response.status, body: await response.json() };
    };
    const count = async (token: string): Promise<number> => (await server!.client(token).list({ limit: 500 })).runs.length;
    const job = (n: number): SubmitRequest => ({ job: { command: ['sh', '-c', `exit ${n}`] } });

    it('the same key and request make one run, however often and however concurrently they are sent; another request with the key is refused', async () => {
      const before = await count(alice);
      const first = await post(alice, job(0), 'key-1');
      expect(first.status).toBe(201);
      const again = await post(alice, job(0), 'key-1');
      expect(again.status).toBe(200);
      expect((again.body as CloudRunDetail).id).toBe(first.body.id);

      // Five at once with a fresh key: one run, and every answer names it.
      const racing = await Promise.all(Array.from({ length: 5 }, () => post(alice, job(1), 'key-2')));
      expect(new Set(racing.map((r) => r.body.id)).size).toBe(1);
      expect(racing.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 201]);
      expect(await count(alice)).toBe(before + 2);

      const other = await post(alice, job(2), 'key-1');
      expect(other.status).toBe(400);
      expect(other.body.error).toMatchObject({ code: 'QWEX_USAGE', message: expect.stringContaining('key-1') });
      expect(await count(alice)).toBe(before + 2);

      // The key finds the run it made; an unused key is not found; a malformed one is refused.
      expect((await get(alice, '/v1/submissions/key-1')).body.id).toBe(first.body.id);
      expect((await get(alice, '/v1/submissions/never-used')).body.error.code).toBe('QWEX_NOT_FOUND');
      expect((await post(alice, job(0), 'no spaces allowed')).status).toBe(400);
    });

    it('keys are per user: another user\'s same key is their own run, and never reveals the first user\'s', async () => {
      const mine = await post(alice, job(0), 'shared-key');
      const theirs = await post(bob, job(0), 'shared-key');
      expect(theirs.status).toBe(201);
      expect(theirs.body.id).not.toBe(mine.body.id);
      expect((await get(bob, '/v1/submissions/shared-key')).body.id).toBe(theirs.body.id);
      expect((await get(alice, '/v1/submissions/shared-key')).body.id).toBe(mine.body.id);
    });

    it('a request refused before it made a run leaves its key free; a key outlives a restart', async () => {
      const refused = await post(alice, { ...job(0), target: 'nowhere' }, 'key-3');
      expect(refused.status).toBe(400);
      const fixed = await post(alice, job(0), 'key-3');
      expect(fixed.status).toBe(201);

      await server!.restart();
      const replayed = await post(alice, job(0), 'key-3');
      expect(replayed.status).toBe(200);
      expect(replayed.body.id).toBe(fixed.body.id);
    });

    it('a key whose submit a crash interrupted before its run was recorded is never run again: 409 QWEX_RUN_LOST', async () => {
      // What a server killed between reserving the key and recording the run leaves in SQL.
      const database = await openDatabase(server!.db);
      try {
        await database.db.insertInto('submissions').values({ user_name: 'alice', key: 'key-4', fingerprint: fingerprintOf(job(0)), run_id: null, created_at: new Date().toISOString() }).execute();
      } finally {
        await database.close();
      }
      const before = await count(alice);
      const answer = await post(alice, job(0), 'key-4');
      expect(answer.status).toBe(409);
      expect(answer.body.error.code).toBe('QWEX_RUN_LOST');
      const lookup = await get(alice, '/v1/submissions/key-4');
      expect(lookup.status).toBe(409);
      expect(lookup.body.error).toMatchObject({ code: 'QWEX_RUN_LOST', hint: expect.stringContaining('qwex ps --cloud') });
      expect(await count(alice)).toBe(before);
    });
  });
}
