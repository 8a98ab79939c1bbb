/**
 * Progress on long work: the core (throttling, rate, time left; with a
 * clock of the test's own, no timing), the line as drawn, and the real
 * thing under a pseudo-terminal (util-linux `script`): the CLI's own
 * snapshot, an SSH sync held at its remote `tar` until the line was seen
 * (a real sshd), and `qwex attach` to a Kubernetes run whose workspace
 * upload hangs (the fake API, its node a real Docker engine). In a pipe,
 * with --quiet or --json, nothing of it appears.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createProgress, type ProgressState } from '../src/progress.js';
import { pullTally } from '../src/backends/docker/image.js';
import { packFiles, tarSize } from '../src/backends/tar-transfer.js';
import { ContentStore, snapshotWorkspace } from '../src/workspace/snapshot.js';
import { formatProgress } from '../client/progress.js';
import { CLI, qwex, requireComponent, sandbox, until, type Sandbox } from './helpers.js';
import { startCloud } from './cloud.js';
import { clusterUnavailable, startTestCluster, type TestCluster } from './kube-cluster.js';
import { sshdUnavailable, startSshd, type TestSshd } from './sshd.js';

describe('the progress core (a clock of the test\'s own)', () => {
  it('passes on a step at once, then at most once per interval, never losing the last update; the rate and time left come from the samples', async () => {
    let clock = 1_000_000;
    const seen: (ProgressState | undefined)[] = [];
    const progress = createProgress((s) => seen.push(s), { throttleMs: 100, now: () => clock });
    const step = progress.step('sending', 'bytes', 1000);
    expect(seen).toEqual([expect.objectContaining({ label: 'sending', done: 0, total: 1000 })]);
    clock += 10;
    step.set(100);
    step.set(200); // within the interval: held back
    expect(seen).toHaveLength(1);
    clock += 990;
    step.set(500);
    expect(seen.at(-1)).toMatchObject({ done: 500, rate: 500, etaSeconds: 1 });
    clock += 10;
    step.set(600, { detail: '3 files' });
    expect(seen.at(-1)!.done).toBe(500);
    // The held update goes out once the interval is over, without another call.
    await until(() => (seen.at(-1)?.done === 600 ? true : undefined), 5000, 'the held update');
    expect(seen.at(-1)).toMatchObject({ detail: '3 files' });
    step.end();
    expect(seen.at(-1)).toBeUndefined();
    step.set(900);
    expect(seen.at(-1)).toBeUndefined();
  });

  it('shows one step at a time: a newer step replaces an older one, whose end then clears nothing', () => {
    const seen: (string | undefined)[] = [];
    const progress = createProgress((s) => seen.push(s?.label), { throttleMs: 0 });
    const first = progress.step('first', 'bytes');
    const second = progress.step('second', 'files', 3);
    first.set(10);
    first.end();
    second.set(1);
    second.end();
    expect(seen).toEqual(['first', 'second', 'second', undefined]);
  });

  it('draws one line: label, bar, amounts, rate and time left, cut to the width', () => {
    const state: ProgressState = { label: 'sending the workspace to gpu-box', unit: 'bytes', done: 50e6, total: 80e6, rate: 3.2e6, etaSeconds: 9.4, detail: '12 files', startedAt: '', updatedAt: '' };
    expect(formatProgress(state, 200)).toBe('sending the workspace to gpu-box ━━━━━━━━━━━━──────── 62% 50.0 MB / 80.0 MB · 12 files · 3.2 MB/s · 9.4s left');
    expect(formatProgress(state, 40)).toBe('sending the workspace to gpu-box ━━━━━━━');
    expect(formatProgress({ ...state, total: undefined, rate: undefined, etaSeconds: undefined }, 200)).toBe('sending the workspace to gpu-box 50.0 MB · 12 files');
  });

  it('knows the size of the tar it sends before sending it', async () => {
    const base = mkdtempSync(join(tmpdir(), 'qwex-tar-'));
    try {
      const project = join(base, 'project');
      mkdirSync(join(project, 'deep', 'er'), { recursive: true });
      writeFileSync(join(project, 'a.txt'), 'x'.repeat(1000));
      writeFileSync(join(project, 'empty'), '');
      writeFileSync(join(project, 'deep', 'er', `${'n'.repeat(120)}.bin`), Buffer.alloc(70_000, 7));
      const store = new ContentStore(join(base, 'store'));
      const manifest = await snapshotWorkspace(project, store);
      let bytes = 0;
      for await (const chunk of (await packFiles(store, manifest.files, manifest.symlinks)) as AsyncIterable<Buffer>) bytes += chunk.length;
      expect(tarSize(manifest.files, manifest.symlinks)).toBe(bytes);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('counts an image pull as the bytes of its layers, whose sizes arrive as it goes', () => {
    const tally = pullTally();
    expect(tally.add({ status: 'Pulling from library/python', id: '3.12' })).toMatchObject({ done: 0, total: 0 });
    tally.add({ status: 'Pulling fs layer', id: 'a' });
    tally.add({ status: 'Pulling fs layer', id: 'b' });
    tally.add({ status: 'Downloading', id: 'a', progressDetail: { current: 500, total: 1000 } });
    expect(tally.add({ status: 'Downloading', id: 'b', progressDetail: { current: 100, total: 4000 } })).toMatchObject({ done: 600, total: 5000 });
    expect(tally.add({ status: 'Download complete', id: 'a' })).toMatchObject({ done: 1100, total: 5000 });
    expect(tally.add({ status: 'Pull complete', id: 'b' })).toMatchObject({ done: 5000, total: 5000 });
  });
});

/** Why no pseudo-terminal can be had here, or undefined. */
async function ptyUnavailable(): Promise<string | undefined> {
  const have = await execa('sh', ['-c', 'command -v script'], { reject: false });
  return have.exitCode === 0 ? undefined : 'util-linux `script` is not installed, so no pseudo-terminal can be had';
}

/** The CLI under a pseudo-terminal, its output (stdout and stderr, as the terminal shows them) gathered as it comes. */
function onTerminal(sb: Sandbox, args: string, env: Record<string, string> = {}): { child: ResultPromise; output: () => string } {
  let output = '';
  // A wide terminal: the lines are cut to its width, and the tests look for their ends.
  const child = execa('script', ['-qfec', `stty cols 200; ${process.execPath} ${CLI} ${args}`, '/dev/null'], {
    cwd: sb.project,
    env: { ...process.env, ...sb.env, TERM: 'xterm', QWEX_PROGRESS_DELAY_MS: '0', ...env },
    reject: false,
  });
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  return { child, output: () => output };
}

/** The lines of a terminal's output as they were left on screen: a line redrawn with \r shows its last drawing. */
function screenLines(output: string): string[] {
  return output
    .replace(/\u001b\[K/g, '')
    .split(/\r?\n/)
    .map((line) => line.split('\r').at(-1)!);
}

describe('on a terminal', () => {
  let sb: Sandbox;
  let noPty: string | undefined;
  beforeAll(async () => {
    noPty = await ptyUnavailable();
  });
  beforeEach((ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_PTY', noPty);
    sb = sandbox();
  });
  afterEach(() => sb.cleanup());

  it('the snapshot qwex takes shows its progress on a terminal, then clears it; a pipe, --quiet and --json get none of it', async () => {
    writeFileSync(join(sb.project, 'data.bin'), Buffer.alloc(2_000_000, 1));
    const tty = onTerminal(sb, 'run -d -- true');
    expect((await tty.child).exitCode).toBe(0);
    expect(tty.output()).toMatch(/\rtaking a snapshot of the workspace [^\r\n]*(MB|kB|B)/);
    // The id (stdout) is on a line of its own: the progress line was erased first.
    expect(screenLines(tty.output())).toContainEqual(expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f-]{27}$/));

    const piped = await qwex(sb, ['run', '-d', '--', 'true'], { env: { QWEX_PROGRESS_DELAY_MS: '0' } });
    expect(piped.exitCode).toBe(0);
    expect(String(piped.stderr)).toBe('');
    for (const flags of ['-q', '--json']) {
      const quiet = onTerminal(sb, `run -d ${flags} -- true`);
      expect((await quiet.child).exitCode).toBe(0);
      expect(quiet.output()).not.toContain('taking a snapshot');
      expect(quiet.output()).not.toContain('\r\u001b[K');
    }
  });
});

describe('on a terminal, the progress of a run\'s supervisor: an SSH sync held at the remote tar', () => {
  let reason: string | undefined;
  let base: string;
  let sshd: TestSshd;
  let sb: Sandbox;
  const gate = (): string => join(base, 'gate');
  beforeAll(async () => {
    reason = (await ptyUnavailable()) ?? (await sshdUnavailable());
    if (reason !== undefined) return;
    base = mkdtempSync(join(tmpdir(), 'qwex-progress-ssh-'));
    // The remote's tar waits for the gate file before it unpacks: the sync stays under way until the test opens it.
    const bin = join(base, 'remote-bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'tar'), `#!/bin/sh\ncase "$1" in -xf) while [ ! -e ${gate()} ]; do sleep 0.05; done;; esac\nexec /bin/tar "$@"\n`);
    chmodSync(join(bin, 'tar'), 0o755);
    sshd = await startSshd(base, [`SetEnv PATH=${bin}:/usr/local/bin:/usr/bin:/bin`]);
  });
  afterAll(async () => {
    await sshd?.stop();
    if (base) rmSync(base, { recursive: true, force: true });
  });
  beforeEach((ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_SSHD', reason);
    sb = sandbox();
    sb.env.HOME = sshd.home;
    rmSync(gate(), { force: true });
    writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    host: ${sshd.alias}\n    root: ${join(base, 'remote')}\n`);
  });
  afterEach(() => sb.cleanup());

  it('qwex run shows "sending the workspace" while the sync is under way, and the run\'s own output on lines of its own', async () => {
    writeFileSync(join(sb.project, 'data.bin'), Buffer.alloc(300_000, 2));
    const tty = onTerminal(sb, 'run --backend ssh -- sh -c "echo hello from the remote"');
    await until(() => (/sending the workspace to qwex-test [^\r\n]*\d+%/.test(tty.output()) ? true : undefined), 60_000, 'the sync\'s progress line');
    const id = readdirSync(join(sb.project, '.qwex', 'runs'))[0]!;
    expect(existsSync(join(sb.project, '.qwex', 'runs', id, 'progress.json'))).toBe(true);
    writeFileSync(gate(), '');
    const r = await tty.child;
    expect(r.exitCode).toBe(0);
    const lines = screenLines(tty.output());
    expect(lines).toContain('hello from the remote');
    expect(lines).toContainEqual(expect.stringMatching(/^✔ {2}run \S+ succeeded/));
    // Once the sync ended, its file went with it.
    expect(existsSync(join(sb.project, '.qwex', 'runs', id, 'progress.json'))).toBe(false);
  });
});

describe('on a terminal, qwex attach to a Kubernetes run whose workspace upload hangs', () => {
  let reason: string | undefined;
  let cluster: TestCluster | undefined;
  let sb: Sandbox;
  beforeAll(async () => {
    reason = (await ptyUnavailable()) ?? (await clusterUnavailable());
    if (reason !== undefined || process.env.QWEX_K8S_KUBECONFIG) return;
    cluster = await startTestCluster('k8s');
  });
  afterAll(async () => {
    await cluster?.close();
  });
  beforeEach((ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', reason);
    if (process.env.QWEX_K8S_KUBECONFIG) {
      console.log('skipped: this test stalls the fake API\'s exec sessions');
      ctx.skip();
    }
    sb = sandbox();
    Object.assign(sb.env, cluster!.env);
    writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n${cluster!.config}`);
  });
  afterEach(() => sb.cleanup());

  it('shows the upload\'s progress while the run is pending; a piped attach shows none', async () => {
    cluster!.fake!.stallExecs(true);
    try {
      const submitted = await qwex(sb, ['run', '-d', '--backend', 'k8s', '--', 'sh', '-c', 'echo ran']);
      expect(submitted.exitCode, String(submitted.stderr)).toBe(0);
      const id = String(submitted.stdout).trim();
      const progressFile = join(sb.project, '.qwex', 'runs', id, 'progress.json');
      await until(() => (existsSync(progressFile) ? true : undefined), 60_000, 'the upload to start');
      expect(JSON.parse(readFileSync(progressFile, 'utf8'))).toMatchObject({ label: expect.stringMatching(/^sending the workspace to pod /), unit: 'bytes', total: expect.any(Number) });

      const tty = onTerminal(sb, `attach ${id}`);
      await until(() => (/\rsending the workspace to pod \S+ [^\r\n]*%/.test(tty.output()) ? true : undefined), 30_000, 'the progress line in attach');
      const piped = qwex(sb, ['attach', id]);
      expect((await qwex(sb, ['cancel', id])).exitCode).toBe(0);
      const [ttyResult, pipedResult] = await Promise.all([tty.child, piped]);
      // Both ended with the cancelled run's exit code.
      expect(ttyResult.exitCode).not.toBe(0);
      expect(ttyResult.exitCode).toBe(pipedResult.exitCode);
      expect(screenLines(tty.output())).toContainEqual(expect.stringMatching(/^⊘ {2}run \S+ cancelled/));
      expect(String(pipedResult.stderr)).not.toContain('sending the workspace');
      expect(String(pipedResult.stderr)).toMatch(/^run \S+ cancelled/m);
      expect(existsSync(progressFile)).toBe(false);
    } finally {
      cluster!.fake!.stallExecs(false);
    }
  });
});

describe('the upload to qwexcloud (a real server on 127.0.0.1)', () => {
  it('reports taking the snapshot, then the bytes sent of what the server lacked, out of their total; a second submit sends nothing', async () => {
    const server = await startCloud({ db: 'sqlite', targets: ['local'] });
    const base = mkdtempSync(join(tmpdir(), 'qwex-upload-progress-'));
    try {
      const project = join(base, 'project');
      mkdirSync(project);
      writeFileSync(join(project, 'weights.bin'), Buffer.alloc(3_000_000, 3));
      writeFileSync(join(project, 'train.sh'), 'echo ok\n');
      const client = server.client(await server.token('alice'));
      const seen: (ProgressState | undefined)[] = [];
      const progress = createProgress((state) => seen.push(state), { throttleMs: 0 });
      const store = new ContentStore(join(base, 'store'));
      const { uploaded } = await client.submitProject(project, { command: ['sh', 'train.sh'] }, { store, progress });
      expect(uploaded).toEqual({ files: 2, bytes: 3_000_008 });
      expect(seen.filter((s) => s?.label === 'taking a snapshot of the workspace').at(-1)).toMatchObject({ done: 3_000_008, detail: '2 files' });
      const sending = seen.filter((s) => s?.label === `uploading the workspace to ${new URL(server.url).host}`);
      expect(sending[0]).toMatchObject({ done: 0, total: 3_000_008 });
      // Counted as it went out, in more than one piece, up to the whole.
      expect(sending.length).toBeGreaterThan(2);
      expect(sending.at(-1)).toMatchObject({ done: 3_000_008, total: 3_000_008, detail: '2 files' });
      expect(seen.at(-1)).toBeUndefined();

      seen.length = 0;
      await client.submitProject(project, { command: ['sh', 'train.sh'] }, { store, progress });
      expect(seen.filter((s) => s?.label.startsWith('uploading')).map((s) => s!.total)).toEqual([0]);
    } finally {
      await server.cleanup();
      rmSync(base, { recursive: true, force: true });
    }
  });
});
