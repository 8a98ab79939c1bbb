/**
 * A cloud run (`--backend cloud`, or `backend: cloud` in qwex.yaml) behaves
 * like any run in every verb, as a user runs the built CLI against a real
 * qwexcloud on 127.0.0.1 (SQLite, the local target): the foreground run
 * with live output and its exit code, --detach, ps, status, logs -f,
 * attach, wait, cancel, artifacts --copy-to, through qwexd too, from the
 * SDK; ps --cloud pages through the server's history; an unchanged second
 * submit uploads nothing; the token appears in no file, listing or error.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CloudRun } from '../src/cloud/api.js';
import type { CloudDetails } from '../src/backends/cloud/index.js';
import type { Run } from '../src/run/model.js';
import { closeDatabases, startCloud, type CloudServer } from './cloud.js';
import { cloudUser, login, type CloudUser } from './cloud-cli-harness.js';
import { ROOT, qwex, qwexJson, until } from './helpers.js';

let server: CloudServer;
let user: CloudUser;
let token: string;
let users = 0;

beforeAll(async () => {
  server = await startCloud({ db: 'sqlite' });
});
afterAll(async () => {
  await server.cleanup();
  await closeDatabases();
});
beforeEach(async () => {
  user = cloudUser();
  // A server user of its own per test: ps --cloud shows only this test's runs.
  token = await server.token(`user${++users}`);
  await login(user, server.url, token);
});
afterEach(async () => {
  // Whatever the test did, the token is in no file of the user's qwex state or runs.
  expect(user.everything()).not.toContain(token);
  await user.cleanup();
});

const details = (id: string): CloudDetails => user.record(id).backend as CloudDetails;
const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

describe('a cloud run in the foreground', () => {
  it('streams its output, exits with its code, records the server\'s run, and brings its artifacts home checked', async () => {
    mkdirSync(join(user.project, 'data'));
    writeFileSync(join(user.project, 'data', 'input.txt'), 'hello from the project\n');
    const script = 'cat data/input.txt; echo "lr=$LR"; echo to-stderr >&2; mkdir -p out; printf "\\000\\001binary\\377" > out/model.bin; exit 3';
    const r = await qwex(user, ['run', '--backend', 'cloud', '-e', 'LR=0.1', '--', 'sh', '-c', script]);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stdout).toBe('hello from the project\nlr=0.1'); // execa strips the last newline
    expect(r.stderr).toMatch(/run \S+ started \(cloud\)[\s\S]*to-stderr[\s\S]*failed \(exit 3\)/);

    const id = r.stderr.match(/run (\S+) started/)![1]!;
    const [full] = (await qwexJson<{ id: string }[]>(user, ['ps'])).filter((x) => x.id.startsWith(id));
    const run = user.record(full!.id);
    expect(run).toMatchObject({ status: 'failed', exitCode: 3, endReason: 'exit', artifacts: { count: 1 } });
    const d = details(run.id);
    expect(d).toMatchObject({ server: server.url, submitKey: run.id, user: `user${users}`, target: 'local', serverBackend: 'local', serverStatus: 'failed' });
    expect(d.uploaded!.files).toBeGreaterThan(0);

    // The server has the same story.
    const client = server.client(token);
    const there = await client.get(d.serverRunId!);
    expect(there).toMatchObject({ status: 'failed', exitCode: 3 });
    expect((await client.logs(there.id, 'stdout')).toString()).toBe(readFileSync(join(user.runDir(run.id), 'stdout.log'), 'utf8'));

    const content = Buffer.from([0, 1, ...Buffer.from('binary'), 0xff]);
    expect(readFileSync(join(user.runDir(run.id), 'files', 'out', 'model.bin'))).toEqual(content);
    const manifest = JSON.parse(readFileSync(join(user.runDir(run.id), 'artifacts.json'), 'utf8'));
    expect(manifest.files).toEqual([{ path: 'out/model.bin', size: content.length, sha256: sha256(content) }]);
  });

  it('sends only what the server lacks: nothing for an unchanged project, one file for one changed file', async () => {
    for (let i = 0; i < 20; i++) writeFileSync(join(user.project, `f${i}.txt`), `file ${i}\n`);
    const ids: string[] = [];
    for (const change of [undefined, undefined, 'f3.txt']) {
      if (change) writeFileSync(join(user.project, change), 'changed\n');
      const id = (await qwex(user, ['run', '-d', '--backend', 'cloud', '--', 'cat', 'f3.txt'])).stdout.trim();
      ids.push(id);
      await qwex(user, ['wait', id]);
    }
    const uploaded = ids.map((id) => details(id).uploaded);
    expect(uploaded[0]!.files).toBeGreaterThanOrEqual(20);
    expect(uploaded[1]).toEqual({ files: 0, bytes: 0 });
    expect(uploaded[2]).toEqual({ files: 1, bytes: 'changed\n'.length });
    expect(readFileSync(join(user.runDir(ids[2]!), 'stdout.log'), 'utf8')).toBe('changed\n');
  });

  it('backend: cloud in qwex.yaml sends runs there, to the target it names; a bad target fails the run, saying why', async () => {
    writeFileSync(join(user.project, 'qwex.yaml'), 'backend: cloud\nbackends:\n  cloud:\n    target: local\n');
    const r = await qwex(user, ['run', '--', 'sh', '-c', 'echo "on $QWEX_RUN_ID"']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/started \(cloud\)/);
    const bad = await qwex(user, ['run', '--target', 'nowhere', '--', 'true']);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toMatch(/no target "nowhere" on this server/);
    expect(bad.stderr).not.toContain(token);
    const flags = await qwex(user, ['run', '--mount', '/tmp:/data', '--', 'true']);
    expect(flags.exitCode).toBe(2);
    expect(flags.stderr).toMatch(/--mount is the server's to set/);
    // A server named in qwex.yaml that this user never logged in to: refused before anything is recorded.
    writeFileSync(join(user.project, 'qwex.yaml'), 'backend: cloud\nbackends:\n  cloud:\n    url: http://127.0.0.1:1/\n');
    const elsewhere = await qwex(user, ['run', '--', 'true']);
    expect(elsewhere.exitCode).toBe(20);
    expect(elsewhere.stderr).toMatch(/not logged in to http:\/\/127\.0\.0\.1:1 \(backends\.cloud\.url\)/);
    expect((await qwexJson<unknown[]>(user, ['ps'])).length).toBe(2);
  });
});

describe('a detached cloud run', () => {
  it('answers ps, status, logs -f, attach, wait and artifacts --copy-to like any run', async () => {
    const script = 'for i in 1 2 3 4 5; do echo "line $i"; echo "err $i" >&2; sleep 0.2; done; mkdir -p out; echo result > out/r.txt';
    const id = (await qwex(user, ['run', '-d', '--backend', 'cloud', '--name', 'detached', '--', 'sh', '-c', script])).stdout.trim();
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    const listed = await qwexJson<{ id: string; backend: string; name: string }[]>(user, ['ps']);
    expect(listed).toEqual([expect.objectContaining({ id, backend: 'cloud', name: 'detached' })]);

    const followed = await qwex(user, ['logs', '-f', id]);
    expect(followed.exitCode).toBe(0);
    // (execa strips the last newline)
    expect(followed.stdout).toBe('line 1\nline 2\nline 3\nline 4\nline 5');
    expect(followed.stderr).toBe('err 1\nerr 2\nerr 3\nerr 4\nerr 5');
    const attached = await qwex(user, ['attach', id]);
    expect(attached.exitCode).toBe(0);
    expect(attached.stdout).toBe(followed.stdout);
    const [done] = await qwexJson<Run[]>(user, ['wait', id]);
    expect(done).toMatchObject({ id, status: 'succeeded', exitCode: 0 });

    const status = await qwexJson<{ run: Run } | Run>(user, ['status', id]);
    const record = 'run' in status ? status.run : status;
    expect((record.backend as CloudDetails).serverRunId).toMatch(/^[0-9a-f-]{36}$/);
    const text = await qwex(user, ['status', id]);
    expect(text.stdout).toMatch(/server +http:\/\/127\.0\.0\.1:\d+ \(as user\d+\)/);
    expect(text.stdout).toMatch(/target +local \(local\)/);

    const copy = mkdtempSync(join(user.project, '..', 'copy-'));
    const copied = await qwex(user, ['artifacts', id, '--copy-to', copy]);
    expect(copied.exitCode).toBe(0);
    expect(readFileSync(join(copy, 'out', 'r.txt'), 'utf8')).toBe('result\n');

    const history = await qwexJson<CloudRun[]>(user, ['ps', '--cloud']);
    expect(history).toEqual([expect.objectContaining({ id: (record.backend as CloudDetails).serverRunId, status: 'succeeded', name: 'detached', target: 'local' })]);
    for (const out of [followed, attached, text, copied, await qwex(user, ['ps', '--cloud']), await qwex(user, ['ps'])]) expect(`${out.stdout}${out.stderr}`).not.toContain(token);
  });

  it('cancel stops it on the server; the record says cancelled there and here', async () => {
    const id = (await qwex(user, ['run', '-d', '--backend', 'cloud', '--grace', '2s', '--', 'sh', '-c', 'trap "echo stopping; exit 7" TERM; echo up; while :; do sleep 0.1; done'])).stdout.trim();
    await until(() => (readFileSync(join(user.runDir(id), 'stdout.log'), 'utf8').includes('up') ? true : undefined), 20_000, 'the command to run on the server');
    const [cancelled] = await qwexJson<Run[]>(user, ['cancel', id]);
    expect(cancelled).toMatchObject({ id, status: 'cancelled', endReason: 'cancel', exitCode: 7 });
    expect(readFileSync(join(user.runDir(id), 'stdout.log'), 'utf8')).toBe('up\nstopping\n');
    const there = await server.client(token).get(details(id).serverRunId!);
    expect(there).toMatchObject({ status: 'cancelled', exitCode: 7 });
    expect((await qwex(user, ['wait', id])).exitCode).toBe(130);
  });

  it('goes through qwexd too, and takes none of its local slots', async () => {
    const env = { QWEX_NO_DAEMON: '' };
    expect((await qwex(user, ['daemon', 'start', '--concurrency', '1'], { env })).exitCode).toBe(0);
    const ids = [];
    for (let i = 0; i < 2; i++) ids.push((await qwex(user, ['run', '-d', '--backend', 'cloud', '--', 'sh', '-c', `echo ${i}; sleep 4`], { env })).stdout.trim());
    // With one local slot, two cloud runs still run at once: each is the server's to schedule.
    await until(async () => {
      const rows = await qwexJson<{ status: string }[]>(user, ['ps']);
      return rows.filter((r) => r.status === 'running').length === 2 ? true : undefined;
    }, 30_000, 'two cloud runs running at once through qwexd');
    const finals = await qwexJson<Run[]>(user, ['wait', ...ids]);
    expect(finals.map((r) => r.status)).toEqual(['succeeded', 'succeeded']);
    expect(ids.map((id) => readFileSync(join(user.runDir(id), 'stdout.log'), 'utf8'))).toEqual(['0\n', '1\n']);
  });
});

describe('ps --cloud and the SDK', () => {
  it('ps --cloud pages through the server\'s whole history (-n 0), or shows the newest N, newest last', async () => {
    const client = server.client(token);
    const made: string[] = [];
    for (let i = 0; i < 60; i++) made.push((await client.submit({ job: { command: ['true'], name: `n${i}` } })).id);
    const all = await qwexJson<CloudRun[]>(user, ['ps', '--cloud', '-n', '0']);
    expect(all.map((r) => r.id)).toEqual(made);
    const newest = await qwexJson<CloudRun[]>(user, ['ps', '--cloud', '-n', '5']);
    expect(newest.map((r) => r.name)).toEqual(['n55', 'n56', 'n57', 'n58', 'n59']);
    const table = await qwex(user, ['ps', '--cloud', '-n', '3']);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID +STATUS +EXIT +CREATED +DURATION +TARGET +NAME +COMMAND$/);
    expect(table.stdout.trim().split('\n')).toHaveLength(4);
  });

  it('the SDK submits a cloud run through the same path (it is a backend)', async () => {
    const program = `
      import { submit, wait } from ${JSON.stringify(join(ROOT, 'dist', 'src', 'sdk.js'))};
      const [run] = await submit([{ command: ['sh', '-c', 'echo from the sdk'], backend: 'cloud' }], { startDaemon: false });
      const [final] = await wait([run]);
      console.log(JSON.stringify({ id: final.id, status: final.status, backend: final.backend }));
    `;
    const r = await execa(process.execPath, ['--input-type=module', '-e', program], { cwd: user.project, env: user.env, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { id: string; status: string; backend: CloudDetails };
    expect(out.status).toBe('succeeded');
    expect(out.backend.serverRunId).toMatch(/^[0-9a-f-]{36}$/);
    expect(readFileSync(join(user.runDir(out.id), 'stdout.log'), 'utf8')).toBe('from the sdk\n');
  });
});
