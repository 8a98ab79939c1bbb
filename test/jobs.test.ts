/**
 * Named jobs, sweeps, dependencies between runs, retries and reruns,
 * through the built CLI and a real qwexd (started on demand, as `qwex
 * submit` starts it) running real local commands.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ListedRun } from '../src/protocol.js';
import type { Run } from '../src/run/model.js';
import { qwex, qwexJson, sandbox, until, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

function record(id: string): Run {
  return JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as Run;
}

function stdoutOf(id: string): string {
  return readFileSync(join(sb.project, '.qwex', 'runs', id, 'stdout.log'), 'utf8');
}

function yaml(lines: string[]): void {
  writeFileSync(join(sb.project, 'qwex.yaml'), `${lines.join('\n')}\n`);
}

async function detached(args: string[]): Promise<string> {
  const r = await qwex(sb, ['run', '-d', ...args]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).trim();
}

describe('named jobs', () => {
  it('run with their parameters (defaults, --set, {placeholders}, QWEX_PARAM_*), are listed, and a run records name and version', async () => {
    yaml([
      'jobs:',
      '  train:',
      `    command: ${JSON.stringify('sh -c \'echo "lr={lr} bs={bs} env=$QWEX_PARAM_LR extra=$1"\' train')}`,
      '    params: { lr: 0.1, bs: 32 }',
    ]);
    const listed = await qwexJson<{ name: string; version: string; params: Record<string, string> }[]>(sb, ['jobs']);
    expect(listed).toEqual([expect.objectContaining({ name: 'train', params: { lr: '0.1', bs: '32' }, version: expect.stringMatching(/^[0-9a-f]{12}$/) })]);

    const r = await qwex(sb, ['run', '-j', 'train', '--set', 'lr=0.5', '--', 'more']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('lr=0.5 bs=32 env=0.5 extra=more');
    const [row] = await qwexJson<ListedRun[]>(sb, ['ps', '--job', 'train']);
    expect(row).toMatchObject({ recipe: 'train', name: 'train' });
    expect(record(row!.id).job.recipe).toEqual({ name: 'train', version: listed[0]!.version, params: { lr: '0.5', bs: '32' } });
    expect(await qwexJson<ListedRun[]>(sb, ['ps', '--job', 'other'])).toEqual([]);

    const unchanged = await qwex(sb, ['status', row!.id]);
    expect(String(unchanged.stdout)).toMatch(new RegExp(`job +train @ ${listed[0]!.version} \\(unchanged since\\) · lr=0.5 bs=32`));
    yaml(['jobs:', '  train:', '    command: echo changed', '    params: { lr: 0.1, bs: 32 }']);
    const changed = await qwex(sb, ['status', row!.id]);
    expect(String(changed.stdout)).toMatch(/job +train @ [0-9a-f]{12} \(changed since: now [0-9a-f]{12}\)/);

    const unknown = await qwex(sb, ['run', '-j', 'train', '--set', 'momentum=0.9', '--json']);
    expect(unknown.exitCode).toBe(2);
    expect(JSON.parse(String(unknown.stderr)).error).toMatchObject({ code: 'QWEX_USAGE', message: 'job "train" has no parameter "momentum"', hint: 'its parameters: lr, bs' });
    const missing = await qwex(sb, ['run', '-j', 'nope']);
    expect(missing.exitCode).toBe(2);
    expect(String(missing.stderr)).toMatch(/no job "nope" in qwex.yaml\nhint: jobs: train/);
  });

  it('a sweep submits the cross product in one request; each run carries its parameters', async () => {
    yaml(['jobs:', '  train:', `    command: ${JSON.stringify('sh -c \'echo "lr={lr} bs={bs} $QWEX_PARAM_LR/$QWEX_PARAM_BS"\'')}`, '    params: { lr: 0.1, bs: 32 }']);
    const r = await qwex(sb, ['run', '-j', 'train', '--grid', 'lr=0.1,0.01', '--grid', 'bs=32,64', '--json']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const runs = JSON.parse(String(r.stdout)) as Run[];
    expect(runs.map((run) => run.job.recipe?.params)).toEqual([
      { lr: '0.1', bs: '32' },
      { lr: '0.1', bs: '64' },
      { lr: '0.01', bs: '32' },
      { lr: '0.01', bs: '64' },
    ]);
    expect(runs.every((run) => run.supervisor === 'qwexd')).toBe(true);
    expect((await qwex(sb, ['wait', ...runs.map((run) => run.id)])).exitCode).toBe(0);
    expect(runs.map((run) => stdoutOf(run.id))).toEqual(['lr=0.1 bs=32 0.1/32\n', 'lr=0.1 bs=64 0.1/64\n', 'lr=0.01 bs=32 0.01/32\n', 'lr=0.01 bs=64 0.01/64\n']);
    expect(runs.map((run) => run.job.name)).toEqual(['train lr=0.1 bs=32', 'train lr=0.1 bs=64', 'train lr=0.01 bs=32', 'train lr=0.01 bs=64']);
  });
});

describe('dependencies between runs', () => {
  it('--after waits for a run, and is cancelled with the reason when it fails; --after-any runs all the same', async () => {
    const gate = join(sb.project, '..', 'go');
    const failing = await detached(['--', 'sh', '-c', `while [ ! -f ${gate} ]; do sleep 0.05; done; exit 3`]);
    const after = await detached(['--after', failing.slice(0, 13), '--', 'echo', 'never']);
    const afterAny = await detached(['--after-any', failing, '--', 'echo', 'ran anyway']);
    const waiting = await until(async () => {
      const rows = await qwexJson<ListedRun[]>(sb, ['ps']);
      const row = rows.find((r) => r.id === after);
      return row?.waitReason ? row : undefined;
    }, 20_000, 'the dependent run to say what it waits for');
    expect(waiting).toMatchObject({ status: 'pending', waitReason: `waiting for run ${failing.slice(0, 13)} (running)` });
    expect(record(after).job.after).toEqual({ runs: [failing], require: 'success' });

    writeFileSync(gate, '');
    expect((await qwex(sb, ['wait', failing])).exitCode).toBe(3);
    expect((await qwex(sb, ['wait', after])).exitCode).toBe(130);
    expect(record(after)).toMatchObject({
      status: 'cancelled',
      error: { code: 'QWEX_NOT_STARTED', message: `run ${failing}, which it runs after, failed (exit 3)` },
    });
    expect(record(after).startedAt).toBeUndefined();
    expect((await qwex(sb, ['wait', afterAny])).exitCode).toBe(0);
    expect(stdoutOf(afterAny)).toBe('ran anyway\n');
  });

  it('--after a run that succeeds starts it afterwards; a run that ended already releases it at once', async () => {
    const first = await detached(['--', 'sh', '-c', 'sleep 0.3; echo first']);
    const second = await detached(['--after', first, '--', 'echo', 'second']);
    expect((await qwex(sb, ['wait', second])).exitCode).toBe(0);
    expect(Date.parse(record(second).startedAt!)).toBeGreaterThanOrEqual(Date.parse(record(first).finishedAt!));
    const third = await qwex(sb, ['run', '--after', `${first},${second}`, '--', 'echo', 'third']);
    expect(third.exitCode, String(third.stderr)).toBe(0);
    expect(String(third.stdout)).toBe('third');
  });
});

describe('retries', () => {
  it('are attempts of their own, linked to the first, created by qwexd after its backoff, until one succeeds', async () => {
    const counter = join(sb.project, '..', 'count');
    yaml([
      'jobs:',
      '  flaky:',
      `    command: ${JSON.stringify(`sh -c 'n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; echo "attempt $n"; [ $n -ge 3 ] || exit 9'`)}`,
      '    retries: 3',
      '    retry_backoff_seconds: 0.2',
    ]);
    const r = await qwex(sb, ['run', '-j', 'flaky']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('attempt 1\nattempt 2\nattempt 3');
    expect(String(r.stderr)).toMatch(/retrying: attempt 2 of 4[\s\S]*retrying: attempt 3 of 4/);
    const rows = await qwexJson<ListedRun[]>(sb, ['ps', '--job', 'flaky']);
    expect(rows.map((row) => [row.status, row.attempt])).toEqual([
      ['failed', 1],
      ['failed', 2],
      ['succeeded', 3],
    ]);
    const [first, second, third] = rows.map((row) => record(row.id));
    expect(first!.job.attempt).toBeUndefined();
    expect(second!.job.attempt).toMatchObject({ of: first!.id, number: 2 });
    expect(third!.job.attempt).toMatchObject({ of: first!.id, number: 3 });
    // The backoff doubles: attempt 3 waited 0.4 s after attempt 2 ended.
    expect(Date.parse(third!.job.attempt!.notBefore!) - Date.parse(second!.finishedAt!)).toBe(400);
    expect(Date.parse(third!.startedAt!)).toBeGreaterThanOrEqual(Date.parse(third!.job.attempt!.notBefore!));
    const table = await qwex(sb, ['ps', '--job', 'flaky']);
    expect(String(table.stdout)).toMatch(/flaky · attempt 3/);
  });

  it('stop when attempts run out (the last attempt\'s exit code), and never follow a cancel', async () => {
    yaml(['jobs:', '  broken:', '    command: sh -c "exit 4"', '    retries: 1', '    retry_backoff_seconds: 0', '  slow:', '    command: sleep 300', '    retries: 2']);
    const r = await qwex(sb, ['run', '-j', 'broken']);
    expect(r.exitCode).toBe(4);
    expect((await qwexJson<ListedRun[]>(sb, ['ps', '--job', 'broken'])).map((row) => [row.status, row.attempt])).toEqual([
      ['failed', 1],
      ['failed', 2],
    ]);
    const slow = await detached(['-j', 'slow']);
    await until(() => (record(slow).status === 'running' ? true : undefined), 20_000, 'the slow run to start');
    expect((await qwex(sb, ['cancel', slow])).exitCode).toBe(0);
    expect((await qwexJson<ListedRun[]>(sb, ['ps', '--job', 'slow'])).map((row) => row.status)).toEqual(['cancelled']);
  });
});

describe('rerun', () => {
  it('replays the old code from its snapshot; --in-place runs today\'s, and qwex diff shows what changed', async () => {
    writeFileSync(join(sb.project, 'prog.sh'), 'echo "version one, token=$API_TOKEN"\n');
    const old = await detached(['-e', 'API_TOKEN=recorded', '--', 'sh', 'prog.sh']);
    expect((await qwex(sb, ['wait', old])).exitCode).toBe(0);
    writeFileSync(join(sb.project, 'prog.sh'), 'echo "version two, token=$API_TOKEN"\n');

    const replay = await qwex(sb, ['rerun', old], { env: { API_TOKEN: 'from-here' } });
    expect(replay.exitCode, String(replay.stderr)).toBe(0);
    // The old code; the secret-looking variable's value from this environment, not from the record.
    expect(String(replay.stdout)).toBe('version one, token=from-here');
    const [, replayed] = (await qwexJson<ListedRun[]>(sb, ['ps'])).map((row) => record(row.id));
    expect(replayed).toMatchObject({ job: { rerunOf: old, command: ['sh', 'prog.sh'], workspace: record(old).job.workspace } });

    const today = await qwex(sb, ['rerun', '--in-place', old, '--detach']);
    expect(today.exitCode, String(today.stderr)).toBe(0);
    const id = String(today.stdout).trim();
    expect((await qwex(sb, ['wait', id])).exitCode).toBe(0);
    expect(stdoutOf(id)).toBe('version two, token=\n');
    expect(String(today.stderr)).toMatch(/API_TOKEN looks secret and is not set here/);
    expect(record(id).job.rerunOf).toBe(old);
    const diff = await qwexJson<{ changed: string[]; added: string[]; removed: string[] }>(sb, ['diff', old, id]);
    expect(diff).toMatchObject({ changed: ['prog.sh'], added: [], removed: [] });

    const inPlace = await qwex(sb, ['run', '--', 'true']);
    expect(inPlace.exitCode).toBe(0);
    const [last] = (await qwexJson<ListedRun[]>(sb, ['ps', '-n', '1']));
    const refused = await qwex(sb, ['rerun', last!.id]);
    expect(refused.exitCode).toBe(2);
    expect(String(refused.stderr)).toMatch(/ran in place: it has no snapshot to replay\nhint: rerun it with today's code: qwex rerun --in-place/);
  });
});
