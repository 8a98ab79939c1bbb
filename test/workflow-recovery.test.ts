/**
 * Workflows, dependencies and retries survive a kill -9 of their
 * supervisor: the next qwexd finishes them from what is on disk. The first
 * tests kill a real qwexd; the last drives Supervisors and WorkflowManagers
 * in this process over the same real files, SQLite index and local runs, to
 * stop exactly between "the failure is recorded" and "its retry exists".
 */
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ListedRun } from '../src/protocol.js';
import type { Job, Run } from '../src/run/model.js';
import { Supervisor, type SupervisorLog } from '../src/run/supervisor.js';
import { RunStore } from '../src/store/run-store.js';
import { WorkflowManager } from '../src/workflow/manager.js';
import type { WorkflowView } from '../src/workflow/types.js';
import { isAlive, qwex, qwexJson, sandbox, until, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

function record(id: string): Run {
  return JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as Run;
}

function daemonPid(): number {
  return Number(readFileSync(join(sb.runtime, 'qwexd.pid'), 'utf8'));
}

async function killDaemon(): Promise<void> {
  const pid = daemonPid();
  process.kill(pid, 'SIGKILL');
  await until(() => (isAlive(pid) ? undefined : true), 10_000, 'qwexd to die');
}

describe('after a kill -9 of qwexd', () => {
  it('a workflow whose running stage ended while qwexd was dead goes on from there and finishes, each stage run once', async () => {
    const gate = join(sb.project, '..', 'go');
    writeFileSync(
      join(sb.project, 'qwex.yaml'),
      [
        'stages:',
        '  - name: first',
        `    command: ${JSON.stringify(`sh -c 'while [ ! -f ${gate} ]; do sleep 0.05; done; mkdir -p out; echo from-first > out/a.txt'`)}`,
        '  - name: second',
        '    command: cat inputs/first/out/a.txt',
        '  - name: third',
        '    command: echo third',
        '',
      ].join('\n'),
    );
    const r = await qwex(sb, ['workflow', 'run', '--detach']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const id = String(r.stdout).trim();
    await until(async () => ((await qwexJson<WorkflowView>(sb, ['workflow', 'status', id])).stages[0]!.status === 'running' ? true : undefined), 20_000, 'the first stage to run');
    await killDaemon();
    // The stage ends while nobody supervises it: its shim records how.
    writeFileSync(gate, '');
    const firstRun = readdirSync(join(sb.project, '.qwex', 'runs')).sort()[0]!;
    await until(() => (existsSync(join(sb.project, '.qwex', 'runs', firstRun, 'exit.json')) ? true : undefined), 20_000, 'the first stage to end');

    // Any workflow command starts qwexd again, which takes the workflow over from disk.
    const w = await qwex(sb, ['workflow', 'wait', id, '--json']);
    expect(w.exitCode, String(w.stderr)).toBe(0);
    const view = JSON.parse(String(w.stdout)) as WorkflowView;
    expect(view.status).toBe('succeeded');
    expect(view.stages.map((s) => s.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    expect(readFileSync(join(sb.project, '.qwex', 'runs', view.stages[1]!.runId!, 'stdout.log'), 'utf8')).toBe('from-first\n');
    // One run per stage: nothing started twice.
    expect(readdirSync(join(sb.project, '.qwex', 'runs'))).toHaveLength(3);
    const onDisk = JSON.parse(readFileSync(join(sb.project, '.qwex', 'workflows', id, 'workflow.json'), 'utf8')) as { status: string };
    expect(onDisk.status).toBe('succeeded');
  });

  it('a run waiting --after one that failed while qwexd was dead is cancelled, with the reason, by the next qwexd', async () => {
    const gate = join(sb.project, '..', 'go');
    const dep = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', `while [ ! -f ${gate} ]; do sleep 0.05; done; exit 5`])).stdout).trim();
    const waiting = await qwex(sb, ['run', '-d', '--after', dep, '--', 'echo', 'never']);
    expect(waiting.exitCode, String(waiting.stderr)).toBe(0);
    const id = String(waiting.stdout).trim();
    await until(() => (record(dep).status === 'running' ? true : undefined), 20_000, 'the dependency to run');
    await killDaemon();
    writeFileSync(gate, '');
    await until(() => (existsSync(join(sb.project, '.qwex', 'runs', dep, 'exit.json')) ? true : undefined), 20_000, 'the dependency to end');
    expect(record(id).status).toBe('pending');

    expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
    expect((await qwex(sb, ['wait', id])).exitCode).toBe(130);
    expect(record(dep)).toMatchObject({ status: 'failed', exitCode: 5 });
    expect(record(id)).toMatchObject({ status: 'cancelled', error: { code: 'QWEX_NOT_STARTED', message: `run ${dep}, which it runs after, failed (exit 5)` } });
  });
});

describe('retry attempts are created once, whatever the restarts (supervisors in this process, real runs)', () => {
  const log: SupervisorLog = { info: () => {}, warn: () => {}, error: () => {} };
  let saved: NodeJS.ProcessEnv;
  beforeEach(() => {
    saved = { ...process.env };
    Object.assign(process.env, sb.env);
  });
  afterEach(() => {
    process.env = saved;
  });

  const failing = (): Job => ({
    command: ['sh', '-c', 'exit 2'],
    shell: false,
    cwd: sb.project,
    env: {},
    backend: 'local',
    backendOptions: {},
    artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 1 },
    killGraceMs: 1000,
    // A long backoff: the attempt stays queued, so that it is there to be found (or not) by the next supervisor.
    retry: { limit: 1, on: ['failed'], backoffMs: 3_600_000 },
  });
  const attemptsOf = (store: RunStore, first: string): ListedRun[] =>
    store.runIndex().list({ project: sb.project }).filter((row) => row.id !== first && record(row.id).job.attempt?.of === first);
  /** A "qwexd": a Supervisor and, unless told otherwise, its WorkflowManager; recovered. */
  const start = async (store: RunStore, withManager = true): Promise<{ supervisor: Supervisor; manager?: WorkflowManager; close(): void }> => {
    const supervisor = new Supervisor(store, { concurrency: 4, log });
    const manager = withManager ? new WorkflowManager(supervisor, log) : undefined;
    await supervisor.recover();
    await manager?.recover();
    return { supervisor, ...(manager ? { manager } : {}), close: () => (manager?.close(), supervisor.close()) };
  };

  it('a failure recorded by a supervisor that died before retrying it gets exactly one attempt', async () => {
    const store = new RunStore({ indexFile: join(sb.state, 'index.db') });
    try {
      // The failure is recorded, and nothing retries it (as if qwexd died right after recording it).
      const bare = await start(store, false);
      const [run] = bare.supervisor.submit(sb.project, [failing()], {});
      await until(() => (record(run!.id).status === 'failed' ? true : undefined), 20_000, 'the run to fail');
      bare.close();
      expect(attemptsOf(store, run!.id)).toEqual([]);

      const first = await start(store);
      first.close();
      const second = await start(store);
      second.close();
      const attempts = attemptsOf(store, run!.id);
      expect(attempts.map((a) => [a.status, a.attempt])).toEqual([['pending', 2]]);
      expect(JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', run!.id, 'next-attempt.json'), 'utf8'))).toEqual({ id: attempts[0]!.id });
    } finally {
      store.close();
    }
  });

  it('an attempt created by a supervisor that died before marking it is found, not made again', async () => {
    const store = new RunStore({ indexFile: join(sb.state, 'index.db') });
    try {
      const first = await start(store);
      const [run] = first.supervisor.submit(sb.project, [failing()], {});
      const marker = join(sb.project, '.qwex', 'runs', run!.id, 'next-attempt.json');
      await until(() => (existsSync(marker) ? true : undefined), 20_000, 'the attempt to be created');
      first.close();
      const [attempt] = attemptsOf(store, run!.id);
      // As if the supervisor died between creating the attempt and marking the failed run.
      rmSync(marker);

      const second = await start(store);
      second.close();
      expect(attemptsOf(store, run!.id).map((a) => a.id)).toEqual([attempt!.id]);
      expect(JSON.parse(readFileSync(marker, 'utf8'))).toEqual({ id: attempt!.id });
      expect(record(attempt!.id).job.attempt).toMatchObject({ of: run!.id, number: 2 });
    } finally {
      store.close();
    }
  });
});
