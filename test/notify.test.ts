/**
 * Notifications of runs supervised by qwexd, end to end: the built CLI and
 * qwexd, real receivers on 127.0.0.1 (an HTTP server checking the webhook
 * signature and Slack's message shape, an SMTP server requiring STARTTLS),
 * a local command, a receiver down then back, and qwexd killed with -9
 * between a run's end and its delivery.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { notifyWorkflowEnd } from '../src/notify/index.js';
import type { Run } from '../src/run/model.js';
import type { DeliveryInfo } from '../src/notify/journal.js';
import { isAlive, qwex, qwexJson, sandbox, sleep, until, type Sandbox } from './helpers.js';
import { HookReceiver, MailReceiver, freePort } from './notify-receivers.js';

const SECRET = 'whsec-test-4f1c9a7e';
type Status = Run & { notifications?: DeliveryInfo[] };

let sb: Sandbox;

beforeEach(() => {
  sb = sandbox();
  sb.env.QWEX_WEBHOOK_SECRET = SECRET;
});

afterEach(async () => {
  await sb.cleanup();
});

function config(yaml: string): void {
  writeFileSync(join(sb.project, 'qwex.yaml'), yaml);
}

async function runDetached(args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await qwex(sb, ['run', '--detach', ...args], { env });
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).trim();
}

function status(id: string): Promise<Status> {
  return qwexJson<Status>(sb, ['status', id]);
}

/** The deliveries of a run once `check` holds for them. */
function deliveriesWhen(id: string, check: (d: DeliveryInfo[]) => boolean, timeoutMs = 20_000, what = 'deliveries'): Promise<DeliveryInfo[]> {
  return until(async () => {
    const list = (await status(id)).notifications ?? [];
    return check(list) ? list : undefined;
  }, timeoutMs, what);
}

function daemonPid(): number {
  return Number(readFileSync(join(sb.runtime, 'qwexd.pid'), 'utf8'));
}

function daemonLog(): string {
  const path = join(sb.state, 'qwexd.log');
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

describe('webhook', () => {
  it('the documented shape: a run\'s end is POSTed, signed t=UNIX_SECONDS,v1=HMAC-SHA256(t.body), once; qwex status shows it; the secret is nowhere', async () => {
    const hook = await new HookReceiver(SECRET).start();
    try {
      config(`notify:
  on: [succeeded, failed]
  targets:
    - webhook: ${hook.url('/hook')}
      secret_env: QWEX_WEBHOOK_SECRET     # the secret's value comes from this variable
`);
      // In the foreground: qwex starts qwexd, which sends the notification.
      const r = await qwex(sb, ['run', '--name', 'train', '--', 'sh', '-c', 'echo hi; exit 3']);
      expect(r.exitCode).toBe(3);
      const received = await until(() => hook.on('/hook')[0], 20_000, 'the webhook');
      expect(received.signature).toBe('valid');
      expect(received.headers['content-type']).toBe('application/json');
      const body = received.json;
      expect(body).toMatchObject({ type: 'run.ended', event: 'failed', delivery: received.headers['x-qwex-delivery'], run: { name: 'train', status: 'failed', exitCode: 3, command: "sh -c 'echo hi; exit 3'", backend: 'local' } });
      const id = body.run.id as string;
      const [delivery] = await deliveriesWhen(id, (d) => d[0]?.status === 'delivered');
      expect(delivery).toMatchObject({ id: received.headers['x-qwex-delivery'], event: 'failed', status: 'delivered', attempts: 1, target: `webhook ${hook.url('/hook')}` });
      expect(String((await qwex(sb, ['status', id])).stdout)).toMatch(/notified\s+failed → webhook http:\/\/127\.0\.0\.1:\d+\/hook: delivered \(1 attempt/);

      // A succeeded run fires too; a cancelled one does not (not in `on`).
      const ok = await runDetached(['true']);
      await until(() => hook.requests.find((q) => q.json?.run?.id === ok), 20_000, 'the second webhook');
      const cancelled = await runDetached(['sleep', '30']);
      await until(async () => ((await status(cancelled)).status === 'running' ? true : undefined), 10_000, 'the run to start');
      expect((await qwex(sb, ['cancel', cancelled])).exitCode).toBe(0);
      await sleep(1500);
      expect(hook.requests.filter((q) => q.json?.run?.id === cancelled)).toEqual([]);
      expect(hook.requests.filter((q) => q.json?.run?.id === id)).toHaveLength(1);
      expect((await status(cancelled)).notifications).toBeUndefined();

      for (const text of [daemonLog(), String((await qwex(sb, ['status', id, '--json'])).stdout), String((await qwex(sb, ['ps', '--json'])).stdout), readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')]) {
        expect(text).not.toContain(SECRET);
      }
    } finally {
      await hook.stop();
    }
  });

  it('a receiver that is down, then back: the delivery is retried and arrives once; the failed attempt is recorded', async () => {
    const hook = new HookReceiver(SECRET);
    hook.port = await freePort();
    config(`notify:
  targets:
    - webhook: http://127.0.0.1:${hook.port}/hook
      secret_env: QWEX_WEBHOOK_SECRET
`);
    const id = await runDetached(['true']);
    const [failed] = await deliveriesWhen(id, (d) => d.length === 1 && d[0]!.attempts >= 1 && d[0]!.lastError !== null, 20_000, 'a failed attempt');
    expect(failed).toMatchObject({ status: 'pending', lastError: expect.stringMatching(/ECONNREFUSED/) });
    expect(failed!.nextAttemptAt).not.toBeNull();
    await hook.start();
    try {
      const [delivered] = await deliveriesWhen(id, (d) => d[0]?.status === 'delivered', 30_000, 'the delivery');
      expect(delivered!.attempts).toBeGreaterThanOrEqual(2);
      await sleep(3000); // nothing more arrives
      expect(hook.on('/hook')).toHaveLength(1);
      expect(hook.on('/hook')[0]!.signature).toBe('valid');
      expect(daemonLog()).toMatch(/"event":"notify-attempt-failed"/);
    } finally {
      await hook.stop();
    }
  });

  it('a receiver that refuses (HTTP 400) fails at once; a target that never answers delays no other target', async () => {
    const hook = await new HookReceiver().start();
    hook.answers.set('/refuse', 400);
    hook.answers.set('/hang', 'hang');
    try {
      config(`notify:
  targets:
    - webhook: ${hook.url('/hang')}
    - webhook: ${hook.url('/refuse')}
    - webhook: ${hook.url('/ok')}
`);
      const id = await runDetached(['true']);
      const list = await deliveriesWhen(id, (d) => d.length === 3 && d.find((x) => x.target.endsWith('/ok'))?.status === 'delivered' && d.find((x) => x.target.endsWith('/refuse'))?.status === 'failed', 20_000, 'ok delivered, refuse failed');
      // The hanging receiver got its request and has not answered: its delivery is still in flight.
      expect(hook.on('/hang')).toHaveLength(1);
      expect(list.find((x) => x.target.endsWith('/hang'))).toMatchObject({ status: 'pending', attempts: 1 });
      expect(list.find((x) => x.target.endsWith('/refuse'))).toMatchObject({ status: 'failed', attempts: 1, lastError: expect.stringMatching(/HTTP 400/) });
      expect(String((await qwex(sb, ['status', id])).stdout)).toMatch(/→ webhook http:\/\/127\.0\.0\.1:\d+\/refuse: failed after 1 attempt; last: .*HTTP 400/);
      // Nothing for the unsigned webhook: no signature header.
      expect(hook.on('/ok')[0]!.headers['x-qwex-signature']).toBeUndefined();
    } finally {
      await hook.stop();
    }
  });
});

describe('Slack, email and a local command', () => {
  it('Slack gets its message format; the mail goes over STARTTLS with credentials from the environment; the command gets the fields, as argv', async () => {
    const hook = await new HookReceiver().start();
    const mail = await new MailReceiver('qwex-bot', 'smtp-pass-93b1').start();
    try {
      const out = join(sb.project, 'command-out.json');
      writeFileSync(join(sb.project, 'record.mjs'), `import { writeFileSync } from 'node:fs';
writeFileSync(process.argv[2], JSON.stringify({ argv: process.argv.slice(3), status: process.env.QWEX_RUN_STATUS, id: process.env.QWEX_RUN_ID, exit: process.env.QWEX_RUN_EXIT_CODE, event: process.env.QWEX_EVENT, cwd: process.cwd() }));
`);
      const slackPath = '/services/T000/B000/slacksecret77';
      config(`notify:
  dashboard_url: https://qwex.example.org/runs/{id}
  smtp:
    host: 127.0.0.1
    port: ${mail.port}
    user_env: SMTP_USER
    password_env: SMTP_PASSWORD
    ca_file: ${mail.caFile}
  targets:
    - slack_env: SLACK_URL
    - email: [oncall@example.org, me@example.org]
      from: qwex@example.org
    - on_end: '${process.execPath} record.mjs ${out} "status $QWEX_RUN_STATUS" "; rm -rf / | $(echo no)"'
`);
      const env = { SLACK_URL: hook.url(slackPath), SMTP_USER: 'qwex-bot', SMTP_PASSWORD: 'smtp-pass-93b1' };
      const r = await qwex(sb, ['run', '--', 'sh', '-c', 'exit 2'], { env });
      expect(r.exitCode).toBe(2);
      const id = (await qwexJson<{ id: string }[]>(sb, ['ps'])).at(-1)!.id;
      const list = await deliveriesWhen(id, (d) => d.length === 3 && d.every((x) => x.status === 'delivered'), 30_000, 'three deliveries');
      expect(list.map((d) => d.target).sort()).toEqual(['command ' + process.execPath, 'email oncall@example.org, me@example.org', 'slack $SLACK_URL']);

      const slack = hook.on(slackPath)[0]!;
      expect(slack.json.text).toBe(`run ${id.slice(0, 13)} failed (exit 2) in ${slack.json.text.split(' in ')[1].split(' ')[0]} https://qwex.example.org/runs/${id}`);
      expect(slack.json.blocks).toEqual([
        { type: 'section', text: { type: 'mrkdwn', text: expect.stringMatching(new RegExp(`^:x: \\*<https://qwex\\.example\\.org/runs/${id}\\|run ${id.slice(0, 13)} failed \\(exit 2\\) in \\S+>\\*\\n\`sh -c 'exit 2'\`$`)) } },
        { type: 'context', elements: [{ type: 'mrkdwn', text: expect.stringMatching(/^\*status:\* failed · \*duration:\* \S+ · \*exit code:\* 2 · \*backend:\* local$/) }] },
      ]);

      expect(mail.mails).toHaveLength(1);
      const m = mail.mails[0]!;
      expect(m).toMatchObject({ secure: true, user: 'qwex-bot', from: 'qwex@example.org', to: ['oncall@example.org', 'me@example.org'] });
      expect(m.header('subject')).toMatch(/^\[qwex\] run \w+-\w+ failed \(exit 2\)/);
      expect(m.header('x-qwex-delivery')).toBe(list.find((d) => d.target.startsWith('email'))!.id);
      expect(m.raw).toContain(`run:       ${id}`);
      expect(m.raw).toContain('exit code: 2');

      const recorded = JSON.parse(readFileSync(out, 'utf8'));
      // No shell: the quoted words stay whole, `;`, `|` and `$(...)` are plain text; $QWEX_RUN_STATUS is filled in.
      expect(recorded).toEqual({ argv: ['status failed', '; rm -rf / | $(echo no)'], status: 'failed', id, exit: '2', event: 'failed', cwd: sb.project });

      const shown = [daemonLog(), String((await qwex(sb, ['status', id, '--json'])).stdout), String((await qwex(sb, ['status', id])).stdout)].join('\n');
      for (const secret of ['slacksecret77', 'smtp-pass-93b1']) expect(shown).not.toContain(secret);
    } finally {
      await hook.stop();
      await mail.close();
    }
  });

  it('--notify adds a named on_request target or a URL for one run; bad configuration is refused before the run', async () => {
    const hook = await new HookReceiver().start();
    try {
      config(`notify:
  targets:
    - name: phone
      on_request: true
      webhook: ${hook.url('/phone')}
`);
      const plain = await runDetached(['true']);
      const asked = await runDetached(['--notify', 'phone', '--notify', hook.url('/adhoc?token=abc123'), 'true']);
      await until(() => (hook.on('/phone').length === 1 && hook.requests.some((q) => q.path.startsWith('/adhoc')) ? true : undefined), 20_000, 'both');
      expect(hook.on('/phone')[0]!.json.run.id).toBe(asked);
      await sleep(1000);
      expect(hook.requests.filter((q) => q.json?.run?.id === plain)).toEqual([]);
      // The query (a token) is not shown.
      expect(String((await qwex(sb, ['status', asked, '--json'])).stdout)).not.toContain('abc123');

      const unknown = await qwex(sb, ['run', '--notify', 'pager', 'true']);
      expect(unknown.exitCode).toBe(2);
      expect(String(unknown.stderr)).toMatch(/--notify pager: not a target of notify\.targets \(phone\), an http\(s\) URL or mailto:ADDRESS/);

      config(`notify:
  smtp: { host: 127.0.0.1, password: hunter2 }
`);
      const password = await qwex(sb, ['run', 'true']);
      expect(password.exitCode).toBe(5);
      expect(String(password.stderr)).toMatch(/qwex\.yaml: notify\.smtp\.password: a password is never read from a configuration file: use password_env/);
      expect(String(password.stderr)).not.toContain('hunter2');

      config(`notify:
  targets:
    - on_end: notify-send done | tee log
`);
      const pipe = await qwex(sb, ['run', 'true']);
      expect(pipe.exitCode).toBe(5);
      expect(String(pipe.stderr)).toMatch(/notify\.targets\.0\.on_end: "\|" needs a shell/);
    } finally {
      await hook.stop();
    }
  });
});

describe('durability', () => {
  it('kill -9 of qwexd between a run\'s end and its delivery: delivered after the restart, once', async () => {
    const hook = new HookReceiver(SECRET);
    hook.port = await freePort();
    config(`notify:
  targets:
    - webhook: http://127.0.0.1:${hook.port}/hook
      secret_env: QWEX_WEBHOOK_SECRET
`);
    const id = await runDetached(['true']);
    await deliveriesWhen(id, (d) => d[0]?.lastError !== null && d[0]?.lastError !== undefined, 20_000, 'a failed attempt');
    const pid = daemonPid();
    process.kill(pid, 'SIGKILL');
    await until(() => (isAlive(pid) ? undefined : true), 5000, 'qwexd to die');
    await hook.start();
    try {
      // The secret is the submitter's: the restarted qwexd's own environment does not have it.
      const { QWEX_WEBHOOK_SECRET: _none, ...withoutSecret } = sb.env;
      expect((await qwex(sb, ['daemon', 'start'], { env: { ...withoutSecret, QWEX_WEBHOOK_SECRET: '' } })).exitCode).toBe(0);
      await until(() => hook.on('/hook')[0], 30_000, 'the delivery after the restart');
      await deliveriesWhen(id, (d) => d[0]?.status === 'delivered');
      await sleep(3000);
      expect(hook.on('/hook')).toHaveLength(1);
      expect(hook.on('/hook')[0]!.signature).toBe('valid');
      // Once delivered, the kept secret is gone from the journal's files.
      for (const file of ['notify.db', 'notify.db-wal']) {
        if (existsSync(join(sb.state, file))) expect(readFileSync(join(sb.state, file)).includes(Buffer.from(SECRET)), file).toBe(false);
      }
    } finally {
      await hook.stop();
    }
  });

  it('runs that ended while no qwexd ran (killed mid-run; direct mode) are told once qwexd sees them', async () => {
    const hook = await new HookReceiver(SECRET).start();
    try {
      config(`notify:
  targets:
    - webhook: ${hook.url('/hook')}
      secret_env: QWEX_WEBHOOK_SECRET
`);
      const during = await runDetached(['sh', '-c', 'sleep 2; exit 7']);
      await until(async () => ((await status(during)).status === 'running' ? true : undefined), 10_000, 'the run to start');
      const pid = daemonPid();
      process.kill(pid, 'SIGKILL');
      await until(() => (isAlive(pid) ? undefined : true), 5000, 'qwexd to die');
      // Direct mode: a run with notifications and no qwexd at all.
      const direct = await runDetached(['sh', '-c', 'exit 5'], { QWEX_NO_DAEMON: '1' });
      await until(() => (existsSync(join(sb.project, '.qwex', 'runs', during, 'exit.json')) ? true : undefined), 10_000, 'the first run to end');
      await sleep(1000);
      expect(hook.requests).toEqual([]);
      expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
      await until(() => (hook.requests.length === 2 ? true : undefined), 30_000, 'both notifications');
      const byRun = Object.fromEntries(hook.requests.map((q) => [q.json.run.id, q.json.run]));
      expect(byRun[during]).toMatchObject({ status: 'failed', exitCode: 7 });
      expect(byRun[direct]).toMatchObject({ status: 'failed', exitCode: 5 });
      await sleep(2000);
      expect(hook.requests).toHaveLength(2);
    } finally {
      await hook.stop();
    }
  });
});

describe('other events', () => {
  it('a run waiting longer than D in the queue fires `waiting` while it still waits', async () => {
    const hook = await new HookReceiver().start();
    try {
      config(`notify:
  waiting_longer_than: 1s
  targets:
    - webhook: ${hook.url('/hook')}
      on: [waiting]
`);
      expect((await qwex(sb, ['daemon', 'start', '--concurrency', '1'])).exitCode).toBe(0);
      const first = await runDetached(['sleep', '8']);
      const queued = await runDetached(['true']);
      const received = await until(() => hook.requests.find((q) => q.json?.run?.id === queued), 20_000, 'the waiting event');
      expect(received.json).toMatchObject({ type: 'run.waiting', event: 'waiting', run: { id: queued, status: 'pending' } });
      expect(received.json.run.durationMs).toBeGreaterThanOrEqual(1000);
      expect((await status(queued)).status).toBe('pending');
      expect(hook.requests.find((q) => q.json?.run?.id === first)).toBeUndefined();
      await qwex(sb, ['cancel', first, queued]);
    } finally {
      await hook.stop();
    }
  });

  it('qwex workflow run: qwexd tells the project\'s `workflow` targets once when the workflow ends, with each stage', async () => {
    const hook = await new HookReceiver(SECRET).start();
    try {
      config(
        [
          'notify:',
          '  targets:',
          `    - webhook: ${hook.url('/wf')}`,
          '      secret_env: QWEX_WEBHOOK_SECRET',
          '      on: [workflow]',
          'stages:',
          '  - name: prepare',
          '    command: [sh, -c, "echo prepared"]',
          '  - name: train',
          '    needs: [prepare]',
          '    command: [sh, -c, "exit 3"]',
          '',
        ].join('\n'),
      );
      const r = await qwex(sb, ['workflow', 'run']);
      expect(r.exitCode, String(r.stderr)).toBe(3);
      const received = await until(() => hook.on('/wf')[0], 20_000, 'the workflow event');
      expect(received.signature).toBe('valid');
      expect(received.json).toMatchObject({ type: 'workflow.ended', event: 'workflow', workflow: { status: 'failed' } });
      expect(received.json.workflow.stages.map((s: { name: string; status: string; exitCode: number }) => [s.name, s.status, s.exitCode])).toEqual([
        ['prepare', 'succeeded', 0],
        ['train', 'failed', 3],
      ]);
      // The stage runs' own ends go nowhere: this target fires on `workflow` only.
      await sleep(1000);
      expect(hook.requests).toHaveLength(1);
    } finally {
      await hook.stop();
    }
  });

  it('a workflow whose end qwexd wrote but never journalled (killed in between) is told after the restart, and only then', async () => {
    const hook = await new HookReceiver(SECRET).start();
    try {
      config(['notify:', '  targets:', `    - webhook: ${hook.url('/wf')}`, '      secret_env: QWEX_WEBHOOK_SECRET', '      on: [workflow]', 'stages:', '  - name: only', '    command: [sh, -c, "echo done"]', ''].join('\n'));
      const r = await qwex(sb, ['workflow', 'run']);
      expect(r.exitCode, String(r.stderr)).toBe(0);
      const first = await until(() => hook.on('/wf')[0], 20_000, 'the workflow event');
      // qwexd stopped and its journal taken away: what a kill between writing the workflow's end and journalling it leaves.
      expect((await qwex(sb, ['daemon', 'stop'])).exitCode).toBe(0);
      for (const f of readdirSync(sb.state)) if (f.startsWith('notify.db')) rmSync(join(sb.state, f));
      expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
      const again = await until(() => hook.on('/wf')[1], 20_000, 'the workflow event, told after the restart');
      expect(again.signature).toBe('valid');
      expect(again.json).toMatchObject({ type: 'workflow.ended', event: 'workflow', workflow: { id: first.json.workflow.id, status: 'succeeded' } });
      // Journalled now: another restart tells it no more.
      expect((await qwex(sb, ['daemon', 'stop'])).exitCode).toBe(0);
      expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
      await sleep(1500);
      expect(hook.on('/wf')).toHaveLength(2);
    } finally {
      await hook.stop();
    }
  });

  it('notifyWorkflowEnd journals a workflow\'s end once; qwexd delivers it', async () => {
    const hook = await new HookReceiver(SECRET).start();
    const previous = process.env.QWEX_STATE_DIR;
    process.env.QWEX_STATE_DIR = sb.state;
    try {
      const workflow = {
        id: '019b0000-0000-7000-8000-000000000001',
        name: 'train-eval',
        status: 'failed' as const,
        project: sb.project,
        stages: [
          { name: 'train', runId: '019b0000-0000-7000-8000-0000000000a1', status: 'succeeded', exitCode: 0 },
          { name: 'eval', runId: '019b0000-0000-7000-8000-0000000000a2', status: 'failed', exitCode: 1 },
        ],
        startedAt: '2026-01-01T10:00:00.000Z',
        finishedAt: '2026-01-01T10:05:00.000Z',
      };
      const notify = { targets: [{ kind: 'webhook' as const, url: hook.url('/wf'), secretEnv: 'QWEX_WEBHOOK_SECRET', on: ['workflow' as const] }] };
      // No qwexd in this process: it goes into the journal, for qwexd to send.
      expect(await notifyWorkflowEnd(workflow, { notify })).toBe(true);
      expect(await notifyWorkflowEnd(workflow, { notify })).toBe(false);
      // Without a spec, the project's configuration decides: none of its targets fires on `workflow`.
      config(`notify:\n  targets:\n    - webhook: ${hook.url('/runs-only')}\n`);
      expect(await notifyWorkflowEnd({ ...workflow, id: '019b0000-0000-7000-8000-000000000002' })).toBe(false);
      expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
      const received = await until(() => hook.on('/wf')[0], 20_000, 'the workflow event');
      expect(received.signature).toBe('valid');
      expect(received.json).toMatchObject({ type: 'workflow.ended', event: 'workflow', workflow: { id: workflow.id, name: 'train-eval', status: 'failed', durationMs: 300_000, stages: workflow.stages } });
      await sleep(1000);
      expect(hook.requests).toHaveLength(1);
    } finally {
      if (previous === undefined) delete process.env.QWEX_STATE_DIR;
      else process.env.QWEX_STATE_DIR = previous;
      await hook.stop();
    }
  });
});
