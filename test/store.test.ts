import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newRunId } from '../src/new-run-id.js';
import type { Run } from '../src/run/model.js';
import { RunIndex } from '../src/store/run-index.js';
import { ROOT, isAlive, qwex, qwexJson, sandbox, until, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

function syntheticRun(project: string, id = newRunId(), extra: Partial<Run> = {}): Run {
  return {
    version: 1,
    id,
    project,
    job: { command: ['true'], shell: false, cwd: project, env: {}, backend: 'local', backendOptions: {}, artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 1 }, killGraceMs: 1000 },
    status: 'succeeded',
    createdAt: new Date().toISOString(),
    startedAt: new Date().toISOString(),
    finishedAt: new Date().toISOString(),
    exitCode: 0,
    signal: null,
    backend: { name: 'local' },
    metadata: { host: 'h', user: 'u', qwexVersion: '0' },
    ...extra,
  };
}

describe('run.json is written atomically', () => {
  it('a reader never sees a torn record, even when the writer is killed mid-way', async () => {
    const path = join(sb.project, 'run.json');
    // A real child process rewrites the record as fast as it can, alternating a small and a large one.
    const script = `
      import { writeJsonAtomic } from ${JSON.stringify(join(ROOT, 'dist', 'src', 'fs-atomic.js'))};
      const small = { n: 'small' };
      const large = { n: 'large', pad: 'x'.repeat(200000) };
      for (let i = 0; ; i++) writeJsonAtomic(${JSON.stringify(path)}, i % 2 ? small : large);
    `;
    writeJsonFile(path, { n: 'small' });
    for (let round = 0; round < 3; round++) {
      const writer = execa(process.execPath, ['--input-type=module', '-e', script], { reject: false });
      const deadline = Date.now() + 400;
      let reads = 0;
      while (Date.now() < deadline) {
        const value = JSON.parse(readFileSync(path, 'utf8')) as { n: string };
        expect(['small', 'large']).toContain(value.n);
        reads++;
        await new Promise((r) => setImmediate(r));
      }
      writer.kill('SIGKILL');
      await writer;
      expect(reads).toBeGreaterThan(10);
      const after = JSON.parse(readFileSync(path, 'utf8')) as { n: string };
      expect(['small', 'large']).toContain(after.n);
    }
    // Temporary files of a killed writer never replace the record; they are dot-files beside it.
    expect(readdirSync(sb.project).filter((n) => !n.startsWith('.'))).toEqual(['run.json']);
  });
});

function writeJsonFile(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value));
}

describe('the SQLite index', () => {
  it('is rebuilt from run directories by doctor --reindex, including runs copied from elsewhere', async () => {
    await qwex(sb, ['run', 'true']);
    await qwex(sb, ['run', 'false']);
    // A run directory brought over from another machine: its record names another project path.
    const foreign = syntheticRun('/some/other/machine/project');
    const foreignDir = join(sb.project, '.qwex', 'runs', foreign.id);
    mkdirSync(foreignDir);
    writeFileSync(join(foreignDir, 'run.json'), JSON.stringify(foreign));
    // It is found by id even before it is indexed.
    expect((await qwexJson<Run>(sb, ['status', foreign.id.slice(0, 20)])).id).toBe(foreign.id);

    rmSync(sb.state, { recursive: true, force: true });
    expect(await qwexJson<unknown[]>(sb, ['ps'])).toEqual([]);

    const report = await qwexJson<{ reindex: { runs: number } }>(sb, ['doctor', '--reindex']);
    expect(report.reindex.runs).toBe(3);
    const rows = await qwexJson<{ id: string; status: string; project: string }[]>(sb, ['ps']);
    expect(rows.map((r) => r.status)).toEqual(['succeeded', 'failed', 'succeeded']);
    expect(rows.every((r) => r.project === sb.project)).toBe(true);
  });

  it('reindex drops rows whose run directory is gone and reports unreadable records', async () => {
    await qwex(sb, ['run', 'true']);
    await qwex(sb, ['run', 'true']);
    const [gone, kept] = readdirSync(join(sb.project, '.qwex', 'runs')).sort();
    rmSync(join(sb.project, '.qwex', 'runs', gone!), { recursive: true });
    const torn = join(sb.project, '.qwex', 'runs', newRunId());
    mkdirSync(torn);
    writeFileSync(join(torn, 'run.json'), '{"version": 1, "id": ');
    // doctor says so, and exits non-zero: an unreadable record is a finding, not a detail.
    const r = await qwex(sb, ['doctor', '--reindex', '--json']);
    expect(r.exitCode).toBe(27);
    const report = JSON.parse(String(r.stdout)) as { reindex: { runs: number; invalid: { dir: string }[] }; unreadable: { dir: string }[] };
    expect(report.reindex.runs).toBe(1);
    expect(report.reindex.invalid.map((i) => i.dir)).toEqual([torn]);
    expect(report.unreadable.map((i) => i.dir)).toEqual([torn]);
    // The unreadable run stays listed, as such, after the reindex; the gone one is dropped.
    const listed = await qwexJson<{ id: string; problem?: string }[]>(sb, ['ps']);
    expect(listed.map((row) => row.id)).toEqual([kept, torn.split('/').pop()]);
    expect(listed[1]!.problem).toMatch(/is not valid JSON/);
    expect(String((await qwex(sb, ['ps'])).stdout)).toMatch(/unreadable/);
    // The torn record is left on disk for a person to look at; a plain doctor finds it too.
    expect(existsSync(join(torn, 'run.json'))).toBe(true);
    expect((await qwex(sb, ["doctor"])).exitCode).toBe(27);
  });

  it('lists the newest runs of a project among 100,000 through an index, not a sort', async () => {
    const index = RunIndex.open(join(sb.state, 'index.db'));
    try {
      const projects = ['/p/a', '/p/b', sb.project];
      const batch: { run: Run; runDir: string }[] = [];
      for (let i = 0; i < 100_000; i++) {
        const project = projects[i % 3]!;
        const run = syntheticRun(project);
        batch.push({ run, runDir: join(project, '.qwex', 'runs', run.id) });
      }
      index.upsertMany(batch);
      const plan = index.explainList({ project: sb.project, limit: 20 }).join('\n');
      expect(plan).toMatch(/USING (COVERING )?INDEX runs_by_project/);
      expect(plan).not.toMatch(/TEMP B-TREE/);
      expect(index.explainList({ limit: 20 }).join('\n')).not.toMatch(/TEMP B-TREE/);
    } finally {
      index.close();
    }
    const rows = await qwexJson<{ id: string; project: string }[]>(sb, ['ps', '-n', '20']);
    expect(rows).toHaveLength(20);
    expect(rows.every((r) => r.project === sb.project)).toBe(true);
    expect(rows.map((r) => r.id)).toEqual([...rows.map((r) => r.id)].sort());
  }, 120_000);
});

describe('the SQLite index: runs finished since', () => {
  it('lists only runs that finished at or after the instant (the newest `limit` of them), none still running', () => {
    const index = RunIndex.open(join(sb.state, 'index.db'));
    try {
      const at = (minutesAgo: number): string => new Date(Date.UTC(2026, 11, 2, 12, 0) - minutesAgo * 60_000).toISOString();
      const runs = [
        syntheticRun(sb.project, newRunId(), { finishedAt: at(120) }),
        syntheticRun(sb.project, newRunId(), { finishedAt: at(30) }),
        syntheticRun(sb.project, newRunId(), { finishedAt: at(10) }),
        syntheticRun(sb.project, newRunId(), { status: 'running', finishedAt: undefined }),
      ];
      index.upsertMany(runs.map((run) => ({ run, runDir: join(sb.project, '.qwex', 'runs', run.id) })));
      const since = index.list({ finishedSince: at(30) }).map((r) => r.id);
      expect(since).toEqual([runs[1]!.id, runs[2]!.id]);
      expect(index.list({ finishedSince: at(30), limit: 1 }).map((r) => r.id)).toEqual([runs[2]!.id]);
    } finally {
      index.close();
    }
  });
});

describe('a run whose monitor died', () => {
  function runDirOf(id: string): string {
    return join(sb.project, '.qwex', 'runs', id);
  }
  function record(id: string): Run {
    return JSON.parse(readFileSync(join(runDirOf(id), 'run.json'), 'utf8')) as Run;
  }

  function holder(id: string): { pid: number; startTime?: string } {
    return JSON.parse(readFileSync(join(runDirOf(id), 'claim.json'), 'utf8')) as { pid: number };
  }

  it('its command goes on, and the exit status its shim wrote is recorded by the next supervisor', async () => {
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'sleep 3; echo done; exit 7'])).stdout);
    await until(() => (record(id).status === 'running' ? record(id) : undefined));
    const monitor = holder(id).pid;
    process.kill(monitor, 'SIGKILL');
    await until(() => (isAlive(monitor) ? undefined : true));
    expect((await qwexJson<Run>(sb, ['status', id])).status).toBe('running');
    const w = await qwex(sb, ['wait', id]);
    expect(w.exitCode).toBe(7);
    expect(record(id)).toMatchObject({ status: 'failed', exitCode: 7, endReason: 'exit', artifacts: { count: 0 } });
  });

  it('becomes lost with the reason when its shim was killed too', async () => {
    const id = String((await qwex(sb, ['run', '-d', '--', 'sleep', '30'])).stdout);
    const running = await until(() => (record(id).status === 'running' ? record(id) : undefined));
    process.kill(holder(id).pid, 'SIGKILL');
    process.kill(running.backend.shimPid as number, 'SIGKILL');
    expect((await qwexJson<Run>(sb, ['status', id])).status).toBe('running'); // its command still runs
    const waiting = qwex(sb, ['wait', id]);
    process.kill(-(running.backend.pgid as number), 'SIGKILL');
    expect((await waiting).exitCode).toBe(125);
    const lost = record(id);
    expect(lost).toMatchObject({ status: 'lost', endReason: 'lost', error: { code: 'QWEX_RUN_LOST' } });
    expect(lost.error!.message).toMatch(/its shim \(pid \d+\) was killed before the command ended/);
  });

  it('is not fooled by a recycled pid: the process start time must match too', async () => {
    // The claim names a live process (this test runner) as the supervisor, but with another start time,
    // as when the monitor died and its pid was given to a new process.
    const run = syntheticRun(sb.project, newRunId(), {
      status: 'running',
      finishedAt: undefined,
      exitCode: null,
      backend: { name: 'local', pid: 999_999, pgid: 999_999 },
    });
    mkdirSync(runDirOf(run.id), { recursive: true });
    writeFileSync(join(runDirOf(run.id), 'run.json'), JSON.stringify(run));
    writeFileSync(join(runDirOf(run.id), 'claim.json'), JSON.stringify({ pid: process.pid, startTime: '1', intent: 'supervise', at: '' }));
    const shown = await qwexJson<Run>(sb, ['status', run.id]);
    expect(shown.status).toBe('lost');
  });

  it('a run whose monitor never claimed it is started by another after a while, exactly once; a queued one waits for qwexd', async () => {
    const marker = join(sb.project, 'ran.log');
    const job = (name: string): Run['job'] => ({ ...syntheticRun(sb.project).job, command: ['sh', '-c', `echo ${name} >> ${marker}`], shell: false });
    const fresh = syntheticRun(sb.project, newRunId(), { job: job('fresh'), status: 'pending', startedAt: undefined, finishedAt: undefined, exitCode: null, supervisor: 'direct' });
    const old = syntheticRun(sb.project, newRunId(), { job: job('old'), status: 'pending', startedAt: undefined, finishedAt: undefined, exitCode: null, supervisor: 'direct', createdAt: new Date(Date.now() - 60_000).toISOString() });
    const dead = syntheticRun(sb.project, newRunId(), { job: job('dead'), status: 'pending', startedAt: undefined, finishedAt: undefined, exitCode: null, supervisor: 'qwexd', createdAt: new Date(Date.now() - 60_000).toISOString() });
    const queued = syntheticRun(sb.project, newRunId(), { job: job('queued'), status: 'pending', startedAt: undefined, finishedAt: undefined, exitCode: null, supervisor: 'qwexd', createdAt: new Date(Date.now() - 60_000).toISOString() });
    for (const run of [fresh, old, dead, queued]) {
      mkdirSync(runDirOf(run.id), { recursive: true });
      writeFileSync(join(runDirOf(run.id), 'run.json'), JSON.stringify(run));
    }
    // `dead` was claimed by a supervisor that died before starting it (a pid that cannot be alive).
    writeFileSync(join(runDirOf(dead.id), 'claim.json'), JSON.stringify({ pid: 2 ** 22 + 7, intent: 'supervise', at: '' }));
    // A fresh unclaimed run's monitor may still be starting; a queued one waits for qwexd's queue.
    expect((await qwexJson<Run>(sb, ['status', fresh.id])).status).toBe('pending');
    expect((await qwexJson<Run>(sb, ['status', queued.id])).status).toBe('pending');
    // An old unclaimed one, and one whose supervisor died, are handed to a new monitor and run.
    await qwexJson<Run>(sb, ['status', old.id]);
    await qwexJson<Run>(sb, ['status', dead.id]);
    expect(await qwexJson<Run[]>(sb, ['wait', old.id, dead.id])).toMatchObject([{ status: 'succeeded' }, { status: 'succeeded' }]);
    // More looks launch no second supervisor: each ran once.
    await qwexJson<Run>(sb, ['status', old.id]);
    expect(readFileSync(marker, 'utf8').split('\n').filter(Boolean).sort()).toEqual(['dead', 'old']);
    expect(record(queued.id).status).toBe('pending');
  });
});

describe('history outlives the machine', () => {
  it('a project directory copied elsewhere keeps every record readable', async () => {
    await qwex(sb, ['run', '--', 'sh', '-c', 'echo hello']);
    const moved = join(sb.project, '..', 'moved');
    cpSync(sb.project, moved, { recursive: true });
    const env = { ...sb.env, QWEX_STATE_DIR: join(sb.project, '..', 'fresh-state') };
    const r = await execa(process.execPath, [join(ROOT, 'dist', 'client', 'cli.js'), 'doctor', '--reindex', '--json'], { cwd: moved, env, reject: false });
    expect(r.exitCode).toBe(0);
    const ps = await execa(process.execPath, [join(ROOT, 'dist', 'client', 'cli.js'), 'ps', '--json'], { cwd: moved, env });
    const rows = JSON.parse(ps.stdout) as { id: string; project: string }[];
    expect(rows).toHaveLength(1);
    expect(rows[0]!.project).toBe(moved);
    const logs = await execa(process.execPath, [join(ROOT, 'dist', 'client', 'cli.js'), 'logs', rows[0]!.id], { cwd: moved, env });
    expect(logs.stdout).toBe('hello');
  });
});
