/**
 * What the dashboard's API computes from a run's files and record, without
 * a server: the usage route's reading of the samples (server/routes/usage.ts:
 * usage.jsonl as the supervisor writes it, GPU samples in either shape GPU
 * sampling may take, a torn last line, `after`), and what a listed run adds
 * from its record (server/runs-source.ts: waiting, job, workflow).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readUsage } from '../../server/routes/usage.js';
import { runExtras } from '../../server/runs-source.js';
import type { Run } from '../../src/run/model.js';

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function runDir(files: Record<string, string>): string {
  dir = mkdtempSync(join(tmpdir(), 'qwex-usage-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

const line = (value: unknown): string => `${JSON.stringify(value)}\n`;

describe('a run\'s usage samples', () => {
  it('are empty for a run that has none', async () => {
    expect(await readUsage(runDir({}))).toEqual({ samples: [], gpu: [] });
  });

  it('are read in order, skipping a line torn by a crash and lines that are not samples', async () => {
    const d = runDir({
      'usage.jsonl':
        line({ t: '2026-01-01T00:00:01.000Z', cpu: 12.5, rss: 1048576, procs: 2 }) +
        'not json\n' +
        line({ t: 'not a time', cpu: 1, rss: 1, procs: 1 }) +
        line({ t: '2026-01-01T00:00:02.000Z', cpu: 99, rss: 2097152, procs: 3 }) +
        '{"t":"2026-01-01T00:00:03.000Z","cpu":5',
    });
    expect((await readUsage(d)).samples).toEqual([
      { t: '2026-01-01T00:00:01.000Z', cpu: 12.5, rss: 1048576, procs: 2 },
      { t: '2026-01-01T00:00:02.000Z', cpu: 99, rss: 2097152, procs: 3 },
    ]);
  });

  it('take GPU samples from usage.jsonl lines with `gpus` and from gpu-usage.jsonl, oldest first', async () => {
    const d = runDir({
      'usage.jsonl': line({ t: '2026-01-01T00:00:03.000Z', cpu: 1, rss: 10, procs: 1, gpus: [{ index: 0, utilization: 80, memoryMb: 1000 }] }),
      'gpu-usage.jsonl': line({ at: '2026-01-01T00:00:01.000Z', gpus: [{ index: 1, uuid: 'GPU-x', memoryUsedMb: 500, memoryTotalMb: 81559, utilizationPercent: 40 }] }),
    });
    const usage = await readUsage(d);
    expect(usage.gpu).toEqual([
      { t: '2026-01-01T00:00:01.000Z', gpus: [{ index: 1, utilizationPercent: 40, memoryUsedMb: 500, memoryTotalMb: 81559 }] },
      { t: '2026-01-01T00:00:03.000Z', gpus: [{ index: 0, utilizationPercent: 80, memoryUsedMb: 1000, memoryTotalMb: null }] },
    ]);
    expect(usage.samples).toHaveLength(1);
  });

  it('after a time: only what is newer (what a page that has the rest asks for)', async () => {
    const d = runDir({ 'usage.jsonl': [1, 2, 3].map((s) => line({ t: `2026-01-01T00:00:0${s}.000Z`, cpu: s, rss: s, procs: 1 })).join('') });
    expect((await readUsage(d, Date.parse('2026-01-01T00:00:02.000Z'))).samples.map((s) => s.cpu)).toEqual([3]);
  });
});

function record(patch: { status: Run['status']; backend: Run['backend']; job?: Record<string, unknown> }): Run {
  return {
    version: 1,
    id: '01a23300-0000-7000-8000-000000000001',
    project: '/p',
    job: { command: ['true'], shell: false, cwd: '/p', env: {}, backend: patch.backend.name, backendOptions: { queue: 'gpu' }, artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 100 }, killGraceMs: 1000, ...patch.job },
    status: patch.status,
    createdAt: '2026-01-01T00:00:00.000Z',
    exitCode: null,
    signal: null,
    backend: patch.backend,
    metadata: { host: 'h', user: 'u', qwexVersion: '0' },
  } as Run;
}

describe('a run as listed', () => {
  const queued = { name: 'kueue', phase: 'queued', queue: 'gpu', waiting: { reason: 'Pending', message: 'insufficient quota', position: 3 } };

  it('says what it waits for in its backend\'s words (a Kueue workload waits while the run is already running), and nothing once it ended', () => {
    expect(runExtras(record({ status: 'running', backend: queued })).waiting).toEqual({ phase: 'queued', reason: 'Pending', message: 'insufficient quota', position: 3, where: 'Kueue LocalQueue gpu' });
    expect(runExtras(record({ status: 'cancelled', backend: queued })).waiting).toBeUndefined();
    expect(runExtras(record({ status: 'running', backend: { name: 'local', pid: 1 } }))).toEqual({});
  });

  it('names the job and the workflow stage it came from, when its job records them', () => {
    const linked = record({ status: 'succeeded', backend: { name: 'local' }, job: { recipe: { name: 'train', version: 'abc', params: {} }, workflow: { id: 'wf1', stage: 'test' } } });
    expect(runExtras(linked)).toEqual({ job: 'train', workflow: { id: 'wf1', stage: 'test' } });
  });
});
