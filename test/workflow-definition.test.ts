/**
 * The parts of jobs and workflows that need no process: stage graphs as
 * qwex.yaml defines them, parameters, versions, sweeps, and the workflow
 * status derived from stage runs.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type QwexConfig } from '../src/config/config.js';
import type { Job, Run } from '../src/run/model.js';
import { expandGrid, planStages, recipeVersion, resolveParams, taskSpec, topologicalOrder } from '../src/workflow/definition.js';
import { deriveState } from '../src/workflow/state.js';
import type { WorkflowRecord } from '../src/workflow/types.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qwex-wfdef-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function config(lines: string[]): Promise<QwexConfig> {
  writeFileSync(join(dir, 'qwex.yaml'), `${lines.join('\n')}\n`);
  return (await loadConfig(dir)).config;
}

describe('stages', () => {
  it('need the stage before them unless they say otherwise; a stage can use a named job, its own keys winning', async () => {
    const c = await config([
      'jobs:',
      '  train:',
      '    command: python train.py --lr {lr}',
      '    params: { lr: 0.1 }',
      '    retries: 2',
      '    env: { A: "1" }',
      'stages:',
      '  - name: a',
      '    command: echo a',
      '  - name: b',
      '    job: train',
      '    params: { lr: 0.5 }',
      '    env: { B: "2" }',
      '  - name: c',
      '    needs: []',
      '    command: [echo, c]',
      '  - name: d',
      '    needs: [b, c]',
      '    command: echo d',
      '    continue_on_failure: true',
    ]);
    const { stages, source, name } = planStages(c, undefined);
    expect(source).toBe(join(dir, 'qwex.yaml'));
    expect(name).toBeNull();
    expect(stages.map((s) => [s.name, s.needs, s.continueOnFailure])).toEqual([
      ['a', [], false],
      ['b', ['a'], false],
      ['c', [], false],
      ['d', ['b', 'c'], true],
    ]);
    const b = stages[1]!;
    expect(b.spec).toMatchObject({ command: 'python train.py --lr 0.5', env: { QWEX_PARAM_LR: '0.5', A: '1', B: '2' } });
    expect(Object.keys(b.spec.env!)).toEqual(['QWEX_PARAM_LR', 'A', 'B']);
    expect(b.retry).toEqual({ limit: 2, on: ['failed', 'lost'], backoffMs: 5000 });
    expect(b.recipe).toEqual({ name: 'train', version: recipeVersion(c.jobs.train!.value, c), params: { lr: '0.5' } });
    expect(stages[2]!.spec.command).toEqual(['echo', 'c']);
    expect(topologicalOrder(stages).map((s) => s.name)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('are refused, naming the key and what was expected: a duplicate name, an unknown job, a parameter it lacks, an option of another backend', async () => {
    const refused = async (lines: string[]): Promise<{ message: string; key: unknown }> => {
      const c = await config(lines);
      try {
        planStages(c, 'w');
      } catch (error) {
        return { message: (error as Error).message, key: (error as { details?: { key?: string } }).details?.key };
      }
      throw new Error('not refused');
    };
    expect(await refused(['workflows:', '  w:', '    stages:', '      - { name: a, command: x }', '      - { name: a, command: y }'])).toEqual({
      message: 'qwex.yaml: workflows.w.stages.1.name: expected a name no other stage has, got "a" again',
      key: 'workflows.w.stages.1.name',
    });
    expect(await refused(['workflows:', '  w:', '    stages:', '      - { name: a, job: nope }'])).toMatchObject({ key: 'workflows.w.stages.0.job' });
    expect(await refused(['jobs:', '  j: { command: x, params: { lr: 1 } }', 'workflows:', '  w:', '    stages:', '      - { name: a, job: j, params: { bs: 2 } }'])).toEqual({
      message: 'qwex.yaml: workflows.w.stages.0.params: expected parameters of job "j": job "j" has no parameter "bs"',
      key: 'workflows.w.stages.0.params',
    });
    expect(await refused(['workflows:', '  w:', '    stages:', '      - { name: a, command: x, queue: gpu }'])).toEqual({
      message: 'qwex.yaml: workflows.w.stages.0.queue: expected a key of a local stage, got queue (a key of kueue and cloud stages)',
      key: 'workflows.w.stages.0.queue',
    });
    const none = await config(['backend: local']);
    expect(() => planStages(none, undefined)).toThrow(/qwex.yaml has no top-level `stages:`/);
    expect(() => planStages(none, 'other')).toThrow(/no workflow "other" in qwex.yaml/);
  });
});

describe('named jobs', () => {
  it('fill {placeholders} of declared parameters only, and pass each as QWEX_PARAM_<NAME>', () => {
    const spec = taskSpec({ command: 'echo {lr} {unknown} ${lr}', params: { lr: 1 } }, { lr: '0.5' }, ["it's"]);
    expect(spec).toMatchObject({ command: "echo 0.5 {unknown} $0.5 'it'\\''s'", env: { QWEX_PARAM_LR: '0.5' } });
    expect(taskSpec({ command: ['run', '--lr={lr}'] }, { lr: '2' }, ['x']).command).toEqual(['run', '--lr=2', 'x']);
    expect(resolveParams({ params: { lr: 0.1, on: true } }, { lr: '3' }, 'job "j"')).toEqual({ lr: '3', on: 'true' });
  });

  it('have a version that ignores key order and changes with the definition and the backend it runs on', async () => {
    const c = await config(['backend: local']);
    const v = recipeVersion({ command: 'x', params: { a: 1, b: 2 } }, c);
    expect(recipeVersion({ params: { b: 2, a: 1 }, command: 'x' }, c)).toBe(v);
    expect(recipeVersion({ command: 'y', params: { a: 1, b: 2 } }, c)).not.toBe(v);
    expect(recipeVersion({ command: 'x', params: { a: 1, b: 2 } }, { ...c, backend: 'docker' })).not.toBe(v);
  });

  it('sweep the cross product, the first parameter varying slowest', () => {
    expect(expandGrid([['a', ['1', '2']], ['b', ['x', 'y', 'z']]])).toHaveLength(6);
    expect(expandGrid([['a', ['1', '2']], ['b', ['x', 'y']]])).toEqual([
      { a: '1', b: 'x' },
      { a: '1', b: 'y' },
      { a: '2', b: 'x' },
      { a: '2', b: 'y' },
    ]);
    expect(expandGrid([])).toEqual([{}]);
  });
});

describe('a workflow\'s status, derived from its stage runs', () => {
  const job = (extra: Partial<Job> = {}): Job => ({
    command: ['x'], shell: false, cwd: '/p', env: {}, backend: 'local', backendOptions: {}, artifacts: { watch: [], ignore: [], maxFileSizeMb: 1 }, killGraceMs: 0, ...extra,
  });
  const record = (continueOnFailure = false): WorkflowRecord => ({
    version: 1, id: 'w', name: null, project: '/p', source: '/p/qwex.yaml', createdAt: '2025-01-01T00:00:00.000Z', status: 'running', exitCode: null, snapshot: null,
    stages: [
      { name: 'a', needs: [], continueOnFailure, job: job() },
      { name: 'b', needs: ['a'], continueOnFailure: false, job: job() },
    ],
    runs: { a: 'ra', b: 'rb' },
  });
  const run = (id: string, status: Run['status'], extra: Partial<Run> = {}): Run => ({
    version: 1, id, project: '/p', job: job(), status, createdAt: '2025-01-01T00:00:00.000Z', exitCode: status === 'failed' ? 3 : status === 'succeeded' ? 0 : null, signal: null,
    backend: { name: 'local' }, metadata: { host: 'h', user: 'u', qwexVersion: 'v' },
    ...(status === 'pending' ? {} : { startedAt: '2025-01-01T00:00:01.000Z' }),
    ...(['succeeded', 'failed', 'cancelled'].includes(status) ? { finishedAt: '2025-01-01T00:00:02.000Z' } : {}),
    ...extra,
  });

  it('is active while a stage is, or will be retried; then failed with the first failed stage\'s code, cancelled, or succeeded', () => {
    expect(deriveState(record(), new Map([['a', run('ra', 'pending')], ['b', run('rb', 'pending')]])).status).toBe('pending');
    expect(deriveState(record(), new Map([['a', run('ra', 'running')], ['b', run('rb', 'pending')]])).status).toBe('running');
    expect(deriveState(record(), new Map([['a', run('ra', 'succeeded')]])).status).toBe('running'); // b has no run yet
    const retried = run('ra', 'failed', { job: job({ retry: { limit: 1, on: ['failed'], backoffMs: 0 } }) });
    expect(deriveState(record(), new Map([['a', retried], ['b', run('rb', 'pending')]])).status).toBe('running');
    expect(deriveState(record(), new Map([['a', run('ra', 'failed')], ['b', run('rb', 'cancelled')]]))).toMatchObject({ status: 'failed', exitCode: 3 });
    expect(deriveState(record(true), new Map([['a', run('ra', 'failed')], ['b', run('rb', 'succeeded')]]))).toMatchObject({ status: 'succeeded', exitCode: 0 });
    expect(deriveState(record(), new Map([['a', run('ra', 'succeeded')], ['b', run('rb', 'cancelled')]]))).toMatchObject({ status: 'cancelled', exitCode: 130 });
    expect(deriveState({ ...record(), cancelRequested: true }, new Map([['a', retried], ['b', run('rb', 'cancelled')]]))).toMatchObject({ status: 'failed' });
  });
});
