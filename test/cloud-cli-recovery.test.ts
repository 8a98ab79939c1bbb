/**
 * A cloud run keeps its whole story through what a network and a laptop do
 * to it, as a user runs the built CLI against a real qwexcloud on
 * 127.0.0.1 through a TCP relay (real sockets): cut log streams resume by
 * byte offset with nothing lost or doubled; a supervisor (the run's
 * monitor) killed with SIGKILL mid-run is replaced by one that adopts the
 * server's run and never submits it again; a cancel during the upload
 * aborts it and nothing reaches the server.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CloudDetails } from '../src/backends/cloud/index.js';
import type { Run } from '../src/run/model.js';
import { closeDatabases, startCloud, type CloudServer } from './cloud.js';
import { cloudUser, login, startRelay, type CloudUser, type Relay } from './cloud-cli-harness.js';
import { CLI, isAlive, qwex, qwexJson, until } from './helpers.js';

let server: CloudServer;
let user: CloudUser;
let relay: Relay;
let token: string;
let users = 0;
/** POST /v1/runs the server had answered when the test began. */
let submitsAtStart = 0;

beforeAll(async () => {
  server = await startCloud({ db: 'sqlite' });
});
afterAll(async () => {
  await server.cleanup();
  await closeDatabases();
});
beforeEach(async () => {
  user = cloudUser();
  token = await server.token(`user${++users}`);
  relay = await startRelay(server.url);
  await login(user, relay.url, token);
  submitsAtStart = 0;
  submitsAtStart = serverSubmits();
});
afterEach(async () => {
  expect(user.everything()).not.toContain(token);
  await relay.close();
  await user.cleanup();
});

/** N numbered lines, one every `ms`, on stdout (and a line on stderr every tenth). */
const counting = (n: number, ms: number): string =>
  `i=1; while [ $i -le ${n} ]; do echo "line $i"; [ $((i % 10)) -eq 0 ] && echo "tick $i" >&2; i=$((i+1)); sleep ${ms / 1000}; done`;
const expected = (n: number): string => Array.from({ length: n }, (_, i) => `line ${i + 1}\n`).join('');
const expectedErr = (n: number): string => Array.from({ length: Math.floor(n / 10) }, (_, i) => `tick ${(i + 1) * 10}\n`).join('');
const log = (id: string, name = 'stdout.log'): string => readFileSync(join(user.runDir(id), name), 'utf8');
const lines = (id: string): number => {
  try {
    return log(id).split('\n').length - 1;
  } catch {
    return 0; // not created yet
  }
};

describe('a cloud run through a bad network', () => {
  it('a log stream cut again and again resumes exactly: nothing lost, nothing doubled, here or on the terminal', async () => {
    const n = 60;
    const run = execa(process.execPath, [CLI, 'run', '--backend', 'cloud', '--', 'sh', '-c', counting(n, 50)], { cwd: user.project, env: user.env, reject: false });
    const id = await until(() => readdirRuns()[0], 20_000, 'the run to be recorded');
    for (let cut = 1; cut <= 4; cut++) {
      const before = lines(id);
      await until(() => (lines(id) > before + 5 ? true : undefined), 20_000, `more output before cut ${cut}`);
      relay.cut();
    }
    const r = await run;
    expect(r.exitCode, r.stderr).toBe(0);
    expect(`${r.stdout}\n`).toBe(expected(n));
    expect(log(id)).toBe(expected(n));
    expect(log(id, 'stderr.log')).toBe(expectedErr(n));
    expect(r.stderr).toContain(expectedErr(n));
    // Cut four times, and reconnected each time.
    expect(relay.connections).toBeGreaterThan(4);
    expect(user.record(id)).toMatchObject({ status: 'succeeded' });
  });
});

describe('a cloud run whose supervisor dies', () => {
  it('SIGKILL of its monitor mid-run: the next look adopts the server\'s run, submits nothing again, and the output is whole', async () => {
    const n = 40;
    const id = (await qwex(user, ['run', '-d', '--backend', 'cloud', '--', 'sh', '-c', `${counting(n, 100)}; mkdir -p out; echo done > out/result.txt`])).stdout.trim();
    await until(() => (lines(id) >= 5 ? true : undefined), 20_000, 'output from the server');
    const monitor = (JSON.parse(readFileSync(join(user.runDir(id), 'claim.json'), 'utf8')) as { pid: number }).pid;
    process.kill(monitor, 'SIGKILL');
    await until(() => (isAlive(monitor) ? undefined : true), 5000, 'the monitor to die');
    const submitsBefore = serverSubmits();

    // `qwex wait` looks at it, finds its supervisor dead, and hands it to a new monitor, which adopts it.
    const [final] = await qwexJson<Run[]>(user, ['wait', id]);
    expect(final).toMatchObject({ id, status: 'succeeded', exitCode: 0, artifacts: { count: 1 } });
    const newMonitor = (JSON.parse(readFileSync(join(user.runDir(id), 'claim.json'), 'utf8')) as { pid: number }).pid;
    expect(newMonitor).not.toBe(monitor);
    expect(log(id)).toBe(expected(n));
    expect(log(id, 'stderr.log')).toBe(expectedErr(n));
    expect(readFileSync(join(user.runDir(id), 'files', 'out', 'result.txt'), 'utf8')).toBe('done\n');

    // One run on the server, found by the local run id as its submit key; no submit since the kill.
    const client = server.client(token);
    const history = (await client.list()).runs;
    expect(history).toHaveLength(1);
    expect((await client.submission(id)).id).toBe((user.record(id).backend as CloudDetails).serverRunId);
    expect(serverSubmits()).toBe(submitsBefore);
  });

  it('a monitor killed right after submitting, before it recorded the server\'s run, is replaced by one that finds the run by its key', async () => {
    const id = (await qwex(user, ['run', '-d', '--backend', 'cloud', '--', 'sh', '-c', 'sleep 1; echo once'])).stdout.trim();
    await until(() => (serverSubmits() >= 1 ? true : undefined), 20_000, 'the submit to reach the server');
    const monitor = (JSON.parse(readFileSync(join(user.runDir(id), 'claim.json'), 'utf8')) as { pid: number }).pid;
    process.kill(monitor, 'SIGKILL');
    // What a monitor killed between the submit and saving its answer leaves: a pending record naming no server run.
    const record = user.record(id);
    writeFileSync(join(user.runDir(id), 'run.json'), JSON.stringify({ ...record, status: 'pending', startedAt: undefined, backend: { name: 'cloud' } }));
    const [final] = await qwexJson<Run[]>(user, ['wait', id]);
    expect(final).toMatchObject({ status: 'succeeded' });
    expect(log(id)).toBe('once\n');
    expect((await server.client(token).list()).runs).toHaveLength(1);
    expect(serverSubmits()).toBe(1);
  });
});

describe('a cloud run whose user logs out meanwhile', () => {
  it('goes on on the server; status says why its output stopped; after qwex login it is followed again, whole', async () => {
    const n = 40;
    const id = (await qwex(user, ['run', '-d', '--backend', 'cloud', '--', 'sh', '-c', counting(n, 100)])).stdout.trim();
    await until(() => (lines(id) >= 5 ? true : undefined), 20_000, 'output from the server');
    expect((await qwex(user, ['logout'])).exitCode).toBe(0);
    relay.cut();
    const problem = await until(() => (user.record(id).backend as CloudDetails).problem ?? undefined, 30_000, 'the record to say why');
    expect(problem).toMatch(/not logged in to http:\/\/127\.0\.0\.1:\d+: the run goes on there/);
    expect((await qwex(user, ['status', id])).stdout).toMatch(/problem +not logged in/);
    await login(user, relay.url, token);
    const [final] = await qwexJson<Run[]>(user, ['wait', id]);
    expect(final).toMatchObject({ status: 'succeeded' });
    expect(log(id)).toBe(expected(n));
    expect((user.record(id).backend as CloudDetails).problem).toBeNull();
  });
});

describe('a cancel while the workspace uploads', () => {
  it('aborts the upload in progress; nothing is submitted, and the run is cancelled', async () => {
    writeFileSync(join(user.project, 'big.bin'), Buffer.alloc(4 * 1024 * 1024, 7));
    relay.holdRequests('PUT /v1/blobs/');
    const id = (await qwex(user, ['run', '-d', '--backend', 'cloud', '--', 'true'])).stdout.trim();
    await until(() => (relay.held > 0 ? true : undefined), 20_000, 'the upload to start');
    const [cancelled] = await qwexJson<Run[]>(user, ['cancel', id]);
    expect(cancelled).toMatchObject({ id, status: 'cancelled', endReason: 'cancel' });
    const monitor = (JSON.parse(readFileSync(join(user.runDir(id), 'claim.json'), 'utf8')) as { pid: number }).pid;
    await until(() => (isAlive(monitor) ? undefined : true), 10_000, 'the monitor to be done');
    expect(serverSubmits()).toBe(0);
    expect((await server.client(token).list()).runs).toEqual([]);
  });
});

function readdirRuns(): string[] | undefined {
  try {
    const ids = readdirSync(join(user.project, '.qwex', 'runs'));
    return ids.length > 0 ? ids : undefined;
  } catch {
    return undefined;
  }
}

/** How many POST /v1/runs the server received since the test began, from its request log. */
function serverSubmits(): number {
  const all = server
    .output()
    .split('\n')
    .filter((line) => line.includes('"method":"POST","url":"/v1/runs"')).length;
  return all - submitsAtStart;
}
