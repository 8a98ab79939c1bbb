/**
 * qwexcloud's notifications: the team's targets and each user's, targets a
 * run names, the journal listed by the API, a receiver down then back, and
 * a kill -9 of the server between a run's end and its delivery; the built
 * server as a real process, over SQLite and PostgreSQL, with real receivers.
 */
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import type { CloudClient } from '../src/cloud/client.js';
import type { DeliveryInfo } from '../src/notify/journal.js';
import { DATABASES, closeDatabases, skipWithoutDatabase, startCloud, type CloudServer } from './cloud.js';
import { sleep, until } from './helpers.js';
import { HookReceiver, freePort } from './notify-receivers.js';

const TEAM_SECRET = 'team-hmac-7d2f01';

afterAll(async () => {
  await closeDatabases();
});

async function api<T>(server: CloudServer, token: string, path: string): Promise<{ status: number; body: T }> {
  const response = await fetch(`${server.url}/v1${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: response.status, body: (await response.json()) as T };
}

async function deliveriesWhen(server: CloudServer, token: string, runId: string, check: (d: DeliveryInfo[]) => boolean, what: string): Promise<DeliveryInfo[]> {
  return until(async () => {
    const { body } = await api<{ notifications: DeliveryInfo[] }>(server, token, `/runs/${runId}/notifications`);
    return check(body.notifications) ? body.notifications : undefined;
  }, 30_000, what);
}

for (const kind of DATABASES) {
  describe(`qwexcloud notifications with ${kind}`, () => {
    beforeEach((ctx) => skipWithoutDatabase(ctx, kind));

    it('the team\'s webhook hears every run, a user\'s Slack only theirs, a named target only the runs that ask; the API lists every delivery; secrets appear nowhere', async () => {
      const hook = await new HookReceiver(TEAM_SECRET).start();
      const slackPath = '/services/T1/B1/alice-slack-secret';
      const server = await startCloud({
        db: kind,
        env: { TEAM_HOOK_SECRET: TEAM_SECRET, ALICE_SLACK: hook.url(slackPath) },
        config: `targets:
  - name: box
    backend: local
notify:
  on: [failed, succeeded]
  dashboard_url: https://qwex.example.org/runs/{id}
  targets:
    - webhook: ${hook.url('/team')}
      secret_env: TEAM_HOOK_SECRET
    - name: pager
      on_request: true
      webhook: ${hook.url('/pager')}
  users:
    alice:
      on: [failed]
      targets:
        - slack_env: ALICE_SLACK
`,
      });
      try {
        const aliceToken = await server.token('alice');
        const bobToken = await server.token('bob');
        const adminToken = await server.token('root', true);
        const alice: CloudClient = server.client(aliceToken);
        const bob: CloudClient = server.client(bobToken);

        const failed = await alice.submit({ job: { command: ['sh', '-c', 'exit 3'] } });
        const ok = await bob.submit({ job: { command: ['true'] }, notify: ['pager'] });
        await until(() => (hook.on('/team').length === 2 && hook.on(slackPath).length === 1 && hook.on('/pager').length === 1 ? true : undefined), 30_000, 'four deliveries');

        const team = Object.fromEntries(hook.on('/team').map((r) => [r.json.run.id, r]));
        expect(team[failed.id]!.signature).toBe('valid');
        expect(team[failed.id]!.json).toMatchObject({ event: 'failed', run: { status: 'failed', exitCode: 3, owner: 'alice', target: 'box', url: `https://qwex.example.org/runs/${failed.id}` } });
        expect(team[ok.id]!.json).toMatchObject({ event: 'succeeded', run: { owner: 'bob' } });
        expect(hook.on(slackPath)[0]!.json.text).toMatch(new RegExp(`^run ${failed.id.slice(0, 13)} failed \\(exit 3\\)`));
        expect(hook.on('/pager')[0]!.json.run.id).toBe(ok.id);

        const aliceRun = await deliveriesWhen(server, aliceToken, failed.id, (d) => d.length === 2 && d.every((x) => x.status === 'delivered'), 'alice\'s deliveries');
        expect(aliceRun.map((d) => d.target).sort()).toEqual(['slack $ALICE_SLACK', `webhook ${hook.url('/team')}`]);
        // Another user's run is not found, its deliveries neither.
        expect((await api(server, bobToken, `/runs/${failed.id}/notifications`)).status).toBe(404);
        const mine = await api<{ notifications: DeliveryInfo[] }>(server, bobToken, '/notifications');
        expect(mine.body.notifications.map((d) => d.subject)).toEqual([ok.id, ok.id]);
        const all = await api<{ notifications: DeliveryInfo[] }>(server, adminToken, '/notifications?status=delivered');
        expect(all.body.notifications).toHaveLength(4);

        // A name the server does not know is refused before anything runs.
        await expect(alice.submit({ job: { command: ['true'] }, notify: ['nobody'] })).rejects.toMatchObject({ code: 'QWEX_USAGE', message: expect.stringMatching(/no notification target "nobody"/) });

        const shown = [server.output(), JSON.stringify(all.body), JSON.stringify(await alice.get(failed.id))].join('\n');
        for (const secret of [TEAM_SECRET, 'alice-slack-secret']) expect(shown).not.toContain(secret);
      } finally {
        await server.cleanup();
        await hook.stop();
      }
    });

    it('a run waiting in the server\'s queue longer than D fires `waiting` for its user\'s target', async () => {
      const hook = await new HookReceiver().start();
      const server = await startCloud({
        db: kind,
        args: ['--concurrency', '1'],
        config: `targets:
  - name: box
    backend: local
notify:
  waiting_longer_than: 1s
  users:
    dave:
      on: [waiting]
      targets:
        - webhook: ${hook.url('/dave')}
`,
      });
      try {
        const dave = server.client(await server.token('dave'));
        const first = await dave.submit({ job: { command: ['sleep', '8'] } });
        const queued = await dave.submit({ job: { command: ['true'] } });
        const received = await until(() => hook.on('/dave')[0], 30_000, 'the waiting event');
        expect(received.json).toMatchObject({ type: 'run.waiting', event: 'waiting', run: { id: queued.id, status: 'pending', owner: 'dave' } });
        expect((await dave.get(queued.id)).status).toBe('pending');
        await dave.cancel(queued.id);
        await dave.cancel(first.id);
        await sleep(1000);
        expect(hook.on('/dave')).toHaveLength(1);
      } finally {
        await server.cleanup();
        await hook.stop();
      }
    });

    it('a receiver down, then the server killed with -9 before delivering: after the restart it is delivered, once', async () => {
      const hook = new HookReceiver(TEAM_SECRET);
      hook.port = await freePort();
      const server = await startCloud({
        db: kind,
        env: { TEAM_HOOK_SECRET: TEAM_SECRET },
        config: `targets:
  - name: box
    backend: local
notify:
  targets:
    - webhook: http://127.0.0.1:${hook.port}/team
      secret_env: TEAM_HOOK_SECRET
`,
      });
      try {
        const token = await server.token('carol');
        const run = await server.client(token).submit({ job: { command: ['true'] } });
        const [failing] = await deliveriesWhen(server, token, run.id, (d) => d.length === 1 && d[0]!.lastError !== null, 'a failed attempt');
        expect(failing).toMatchObject({ status: 'pending', lastError: expect.stringMatching(/ECONNREFUSED/) });
        await server.restart({ signal: 'SIGKILL' });
        await hook.start();
        const [delivered] = await deliveriesWhen(server, token, run.id, (d) => d[0]?.status === 'delivered', 'the delivery after the restart');
        expect(delivered!.attempts).toBeGreaterThanOrEqual(2);
        await sleep(2000);
        expect(hook.on('/team')).toHaveLength(1);
        expect(hook.on('/team')[0]!.signature).toBe('valid');
        expect(hook.on('/team')[0]!.headers['x-qwex-delivery']).toBe(delivered!.id);
      } finally {
        await server.cleanup();
        await hook.stop();
      }
    });
  });
}
