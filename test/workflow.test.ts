/**
 * Workflows end to end, through the built CLI and a real qwexd: a local,
 * a Docker (the real engine, the test image) and a kueue stage (on the FAKE
 * Kubernetes API, its pods on the same engine) each reading the artifact of
 * the stage before; a failed middle stage and `workflow retry`; a cancel
 * that stops the running stage; bad YAML refused before anything runs.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Run } from '../src/run/model.js';
import type { WorkflowView } from '../src/workflow/types.js';
import { DOCKER_TEST_IMAGE, dockerUnavailable, isAlive, qwex, qwexJson, requireComponent, sandbox, until, type Sandbox } from './helpers.js';
import { clusterUnavailable, startTestCluster, type TestCluster } from './kube-cluster.js';
import { sshdUnavailable, startSshd, type TestSshd } from './sshd.js';

let sb: Sandbox;
afterEach(async () => {
  await sb?.cleanup();
});

function record(id: string): Run {
  return JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as Run;
}

function stdoutOf(id: string): string {
  return readFileSync(join(sb.project, '.qwex', 'runs', id, 'stdout.log'), 'utf8');
}

function status(id: string): Promise<WorkflowView> {
  return qwexJson<WorkflowView>(sb, ['workflow', 'status', id]);
}

/** A file outside the project (so no snapshot holds it) that a stage waits for or checks. */
function gate(name: string): string {
  return join(sb.project, '..', name);
}

describe('a workflow across backends (the real Docker engine; kueue on the FAKE Kubernetes API)', () => {
  let reason: string | undefined;
  let cluster: TestCluster | undefined;
  beforeAll(async () => {
    reason = (await dockerUnavailable()) ?? (await clusterUnavailable());
    if (reason === undefined) cluster = await startTestCluster('kueue');
  });
  afterAll(async () => {
    await cluster?.close();
  });
  beforeEach((ctx) => {
    sb = sandbox();
    requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', reason);
  });

  it('runs test (local), train (docker) and deploy (kueue) in order, each reading the artifact of the stage before', async () => {
    Object.assign(sb.env, cluster!.env);
    writeFileSync(
      join(sb.project, 'qwex.yaml'),
      [
        'stages:',
        '  - name: test',
        '    backend: local',
        `    command: ${JSON.stringify(`sh -c 'mkdir -p out && echo tested > out/report.txt && echo "test ran"'`)}`,
        '  - name: train',
        '    backend: docker',
        `    image: ${DOCKER_TEST_IMAGE}`,
        '    pull: never',
        `    command: ${JSON.stringify(`sh -c 'mkdir -p out && { cat "$QWEX_INPUTS/test/out/report.txt"; echo trained; } > out/model.txt && echo "train read: $(cat inputs/test/out/report.txt)"'`)}`,
        '  - name: deploy',
        '    backend: kueue',
        `    command: ${JSON.stringify(`sh -c 'echo "deploy read: $(cat inputs/train/out/model.txt | tr "\\n" " ")inputs=$QWEX_INPUTS"'`)}`,
        '',
      ].join('\n'),
    );
    mkdirSync(join(sb.project, '.qwex'), { recursive: true });
    writeFileSync(join(sb.project, '.qwex', 'config.yaml'), `backends:\n${cluster!.config}`);

    const r = await qwex(sb, ['workflow', 'run']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    // Each stage's own output, in order, in the foreground.
    expect(String(r.stdout)).toMatch(/test ran\n[\s\S]*train read: tested\n[\s\S]*deploy read: tested trained inputs=inputs$/);
    expect(String(r.stderr)).toMatch(/stage test[\s\S]*stage train[\s\S]*stage deploy[\s\S]*succeeded/);

    const [listed] = await qwexJson<WorkflowView[]>(sb, ['workflow', 'ps']);
    const view = await status(listed!.id.slice(0, 13));
    expect(view).toMatchObject({ id: listed!.id, status: 'succeeded', exitCode: 0 });
    expect(view.stages.map((s) => [s.name, s.status, s.exitCode, s.backend])).toEqual([
      ['test', 'succeeded', 0, 'local'],
      ['train', 'succeeded', 0, 'docker'],
      ['deploy', 'succeeded', 0, 'kueue'],
    ]);
    const runs = view.stages.map((s) => record(s.runId!));
    // One snapshot for all, taken at submit; each stage a run of its own on its own backend, linked to the workflow.
    expect(runs.map((run) => run.provenance?.manifest)).toEqual([view.snapshot, view.snapshot, view.snapshot]);
    expect(runs.map((run) => run.job.workflow)).toEqual(view.stages.map((s) => ({ id: view.id, stage: s.name })));
    expect(runs.map((run) => run.backend.name)).toEqual(['local', 'docker', 'kueue']);
    expect(stdoutOf(view.stages[2]!.runId!)).toBe('deploy read: tested trained inputs=inputs\n');
    const onDisk = JSON.parse(readFileSync(join(sb.project, '.qwex', 'workflows', view.id, 'workflow.json'), 'utf8')) as { status: string; runs: Record<string, string> };
    expect(onDisk.status).toBe('succeeded');
    expect(onDisk.runs).toEqual(Object.fromEntries(view.stages.map((s) => [s.name, s.runId])));
    expect(await cluster!.jobsLeft()).toEqual([]);
  });
});

describe('a workflow with an ssh stage (a real sshd)', () => {
  let reason: string | undefined;
  let base: string;
  let sshd: TestSshd | undefined;
  beforeAll(async () => {
    reason = await sshdUnavailable();
    if (reason !== undefined) return;
    base = mkdtempSync(join(tmpdir(), 'qwex-wf-ssh-'));
    sshd = await startSshd(base);
  });
  afterAll(async () => {
    await sshd?.stop();
    if (base) rmSync(base, { recursive: true, force: true });
  });
  beforeEach((ctx) => {
    sb = sandbox();
    requireComponent(ctx, 'QWEX_REQUIRE_SSHD', reason);
  });

  it('sends a stage its inputs with the workspace, and brings its artifacts home for the next stage', async () => {
    sb.env.HOME = sshd!.home;
    writeFileSync(
      join(sb.project, 'qwex.yaml'),
      [
        'backends:',
        `  ssh: { host: ${sshd!.alias}, root: ${join(base, 'remote')} }`,
        'stages:',
        '  - name: make',
        `    command: ${JSON.stringify(`sh -c 'mkdir -p out && echo made-here > out/in.txt'`)}`,
        '  - name: remote',
        '    backend: ssh',
        `    command: ${JSON.stringify(`sh -c 'mkdir -p out && { cat inputs/make/out/in.txt; echo and-there; } > out/back.txt'`)}`,
        '  - name: home',
        '    command: cat inputs/remote/out/back.txt',
        '',
      ].join('\n'),
    );
    const r = await qwex(sb, ['workflow', 'run', '--json']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const view = JSON.parse(String(r.stdout)) as WorkflowView;
    expect(view.stages.map((s) => [s.backend, s.status])).toEqual([
      ['local', 'succeeded'],
      ['ssh', 'succeeded'],
      ['local', 'succeeded'],
    ]);
    expect(stdoutOf(view.stages[2]!.runId!)).toBe('made-here\nand-there\n');
  });
});

describe('workflows of local stages', () => {
  beforeEach(() => {
    sb = sandbox();
  });

  it('a failed middle stage stops the rest with its exit code; retry resumes from it and reuses the stage before', async () => {
    const ok = gate('fixed');
    writeFileSync(
      join(sb.project, 'qwex.yaml'),
      [
        'workflows:',
        '  pipeline:',
        '    stages:',
        '      - name: prepare',
        `        command: sh -c 'mkdir -p out && echo data > out/data.txt'`,
        '      - name: train',
        `        command: sh -c 'cat inputs/prepare/out/data.txt; [ -f ${ok} ] || exit 7; mkdir -p out && echo model > out/model.txt'`,
        '      - name: report',
        `        command: sh -c 'cat inputs/train/out/model.txt'`,
        '',
      ].join('\n'),
    );
    const first = await qwex(sb, ['workflow', 'run', 'pipeline']);
    expect(first.exitCode, String(first.stderr)).toBe(7);
    const [listed] = await qwexJson<WorkflowView[]>(sb, ['workflow', 'ps']);
    const failed = await status(listed!.id);
    expect(failed.status).toBe('failed');
    expect(failed.stages.map((s) => [s.name, s.status, s.exitCode])).toEqual([
      ['prepare', 'succeeded', 0],
      ['train', 'failed', 7],
      ['report', 'cancelled', null],
    ]);
    const report = record(failed.stages[2]!.runId!);
    expect(report.error).toEqual({ code: 'QWEX_NOT_STARTED', message: 'stage train failed (exit 7)' });
    expect(report.startedAt).toBeUndefined();

    writeFileSync(ok, '');
    const again = await qwex(sb, ['workflow', 'retry', failed.id.slice(0, 13)]);
    expect(again.exitCode, String(again.stderr)).toBe(0);
    const resumed = await status(failed.id);
    expect(resumed).toMatchObject({ status: 'succeeded', exitCode: 0, resumed: 1 });
    // prepare's run is reused; train and report ran again, as new runs.
    expect(resumed.stages[0]!.runId).toBe(failed.stages[0]!.runId);
    expect(resumed.stages[1]!.runId).not.toBe(failed.stages[1]!.runId);
    expect(resumed.stages[2]!.runId).not.toBe(failed.stages[2]!.runId);
    expect(stdoutOf(resumed.stages[1]!.runId!)).toBe('data\n');
    expect(stdoutOf(resumed.stages[2]!.runId!)).toBe('model\n');
    const retryAgain = await qwex(sb, ['workflow', 'retry', failed.id, '--json']);
    expect(retryAgain.exitCode).toBe(2);
    expect(JSON.parse(String(retryAgain.stderr)).error.message).toMatch(/succeeded: there is nothing to retry/);
  });

  it('a stage that continues on failure does not stop the rest, and a graph runs what it can at once', async () => {
    writeFileSync(
      join(sb.project, 'qwex.yaml'),
      [
        'stages:',
        '  - name: lint',
        '    command: sh -c "exit 4"',
        '    continue_on_failure: true',
        '  - name: left',
        '    needs: []',
        '    command: echo left',
        '  - name: join',
        '    needs: [lint, left]',
        '    command: echo joined',
        '',
      ].join('\n'),
    );
    const r = await qwex(sb, ['workflow', 'run', '--json']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const view = JSON.parse(String(r.stdout)) as WorkflowView;
    expect(view.status).toBe('succeeded');
    expect(view.stages.map((s) => [s.name, s.status, s.needs])).toEqual([
      ['lint', 'failed', []],
      ['left', 'succeeded', []],
      ['join', 'succeeded', ['lint', 'left']],
    ]);
  });

  it('a stage with retries is retried as a new attempt, and the stages after it wait for that attempt', async () => {
    const counter = gate('count');
    writeFileSync(
      join(sb.project, 'qwex.yaml'),
      [
        'stages:',
        '  - name: flaky',
        `    command: ${JSON.stringify(`sh -c 'n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; echo "try $n"; [ $n -ge 2 ] || exit 1; mkdir -p out; echo "made by try $n" > out/x'`)}`,
        '    retries: 2',
        '    retry_backoff_seconds: 0',
        '  - name: use',
        '    command: cat inputs/flaky/out/x',
        '',
      ].join('\n'),
    );
    const r = await qwex(sb, ['workflow', 'run']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('try 1\ntry 2\nmade by try 2');
    const [listed] = await qwexJson<WorkflowView[]>(sb, ['workflow', 'ps']);
    expect(listed!.stages.map((s) => [s.name, s.status, s.attempt])).toEqual([
      ['flaky', 'succeeded', 2],
      ['use', 'succeeded', undefined],
    ]);
    const attempt = record(listed!.stages[0]!.runId!);
    expect(record(attempt.job.attempt!.of)).toMatchObject({ status: 'failed', job: { workflow: { id: listed!.id, stage: 'flaky' } } });
  });

  it('a cancelled workflow stops its running stage, and the stages after it never start', async () => {
    writeFileSync(
      join(sb.project, 'qwex.yaml'),
      ['stages:', '  - name: long', '    command: sleep 300', '  - name: after', '    command: echo never', ''].join('\n'),
    );
    const r = await qwex(sb, ['workflow', 'run', '--detach']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const id = String(r.stdout).trim();
    const running = await until(async () => {
      const v = await status(id);
      return v.stages[0]!.status === 'running' ? v : undefined;
    }, 20_000, 'the first stage to run');
    expect(running.status).toBe('running');
    expect(running.stages[1]).toMatchObject({ status: 'pending', reason: expect.stringMatching(/^waiting for stage long/) });
    const pid = record(running.stages[0]!.runId!).backend.pid as number;
    expect(isAlive(pid)).toBe(true);

    const cancelled = await qwex(sb, ['workflow', 'cancel', id, '--json']);
    expect(cancelled.exitCode, String(cancelled.stderr)).toBe(0);
    const view = JSON.parse(String(cancelled.stdout)) as WorkflowView;
    expect(view).toMatchObject({ status: 'cancelled', exitCode: 130, cancelRequested: true });
    expect(view.stages.map((s) => s.status)).toEqual(['cancelled', 'cancelled']);
    expect(record(view.stages[0]!.runId!)).toMatchObject({ status: 'cancelled', endReason: 'cancel' });
    expect(record(view.stages[1]!.runId!)).toMatchObject({ status: 'cancelled', error: { code: 'QWEX_NOT_STARTED' } });
    await until(() => (isAlive(pid) ? undefined : true), 10_000, 'the stage\'s process to be gone');
    expect((await qwex(sb, ['workflow', 'cancel', id])).exitCode).toBe(10);
  });
});

describe('bad workflow YAML is refused before anything runs, with the file, the key and what was expected', () => {
  beforeEach(() => {
    sb = sandbox();
  });

  const cases: [string, string[], string, RegExp][] = [
    [
      'an unknown stage in needs',
      ['stages:', '  - name: a', '    command: "true"', '  - name: b', '    needs: [a, nope]', '    command: "true"'],
      'stages.1.needs.1',
      /^qwex\.yaml: stages\.1\.needs\.1: expected the name of another stage \(a\), got "nope"$/,
    ],
    [
      'a cycle',
      ['stages:', '  - name: a', '    needs: [c]', '    command: "true"', '  - name: b', '    needs: [a]', '    command: "true"', '  - name: c', '    needs: [b]', '    command: "true"'],
      'stages.0.needs',
      /^qwex\.yaml: stages\.0\.needs: expected stages that do not need each other in a circle, got a cycle: a → c → b → a$/,
    ],
    [
      'a container stage without an image',
      ['stages:', '  - name: a', '    command: "true"', '  - name: train', '    backend: docker', '    command: python train.py'],
      'stages.1.image',
      /^qwex\.yaml: stages\.1\.image: expected an image for the docker stage "train" \(on the stage, or as backends\.docker\.image\), got nothing$/,
    ],
    ['a key no stage has', ['stages:', '  - name: a', '    command: "true"', '    neds: [b]'], 'stages.0.neds', /^.*qwex\.yaml: unknown key "stages\.0\.neds"$/],
  ];

  for (const [what, lines, key, message] of cases) {
    it(what, async () => {
      writeFileSync(join(sb.project, 'qwex.yaml'), `${lines.join('\n')}\n`);
      const r = await qwex(sb, ['workflow', 'run', '--json']);
      expect(r.exitCode).toBe(5);
      const { error } = JSON.parse(String(r.stderr)) as { error: { code: string; message: string; details: { file: string; key: string } } };
      expect(error.code).toBe('QWEX_CONFIG_INVALID');
      expect(error.message).toMatch(message);
      expect(error.details).toEqual({ file: join(sb.project, 'qwex.yaml'), key });
      // Nothing ran: no run, no workflow, no qwexd.
      expect(existsSync(join(sb.project, '.qwex', 'runs'))).toBe(false);
      expect(existsSync(join(sb.project, '.qwex', 'workflows'))).toBe(false);
      expect(existsSync(join(sb.runtime, 'qwexd.pid'))).toBe(false);
    });
  }
});
