/**
 * What a person at a terminal meets: listings that fit the terminal (the
 * command cut, never the id), colour as NO_COLOR / FORCE_COLOR / --no-color
 * say, examples in `qwex --help`, `qwex init` writing a qwex.yaml from what
 * this machine has (a real Docker engine, ~/.ssh/config, a kubeconfig), and
 * `qwex batch` as `qwex run` on the configured remote backend (a real sshd).
 * Terminals are real pseudo-terminals (util-linux `script`).
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Run } from '../src/run/model.js';
import { CLI, dockerUnavailable, qwex, requireComponent, sandbox, type Sandbox } from './helpers.js';
import { sshdUnavailable, startSshd, type TestSshd } from './sshd.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

/** The CLI under a pseudo-terminal of `columns` columns; what the terminal received. */
async function onTerminal(ctx: { skip(): void }, args: string, options: { columns?: number; env?: Record<string, string> } = {}): Promise<string> {
  const have = await execa('sh', ['-c', 'command -v script'], { reject: false });
  requireComponent(ctx, 'QWEX_REQUIRE_PTY', have.exitCode === 0 ? undefined : 'util-linux `script` is not installed, so no pseudo-terminal can be had');
  const r = await execa('script', ['-qec', `stty cols ${options.columns ?? 200}; ${process.execPath} ${CLI} ${args}`, '/dev/null'], {
    cwd: sb.project,
    env: { ...process.env, ...sb.env, NO_COLOR: '', TERM: 'xterm', ...options.env },
    reject: false,
  });
  return String(r.stdout);
}

const ANSI = /\u001b\[[0-9;]*m/g;
const visibleLines = (text: string): string[] => text.replace(ANSI, '').split(/\r?\n/).filter((l) => l !== '');

async function someRuns(count: number, command: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const r = await qwex(sb, ['run', '-d', '--', 'sh', '-c', command]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    ids.push(String(r.stdout).trim());
  }
  await qwex(sb, ['wait', ...ids]);
  return ids;
}

describe('listings fit the terminal', () => {
  it('qwex ps cuts the command to the terminal\'s width, never the id; a wide terminal shows it whole; a pipe keeps 60 characters', async (ctx) => {
    const long = `echo ${'abcdefghij'.repeat(12)}`;
    const ids = await someRuns(2, long);
    const narrow = visibleLines(await onTerminal(ctx, 'ps', { columns: 90 }));
    expect(narrow).toHaveLength(3);
    for (const line of narrow) expect([...line].length).toBeLessThanOrEqual(90);
    const shown = narrow.slice(1).map((l) => l.split(/\s+/)[0]!);
    // The ids as long as they must be to tell the runs apart, in full.
    for (const [i, prefix] of shown.entries()) expect(ids[i]!.startsWith(prefix) && prefix.length >= 8).toBe(true);
    expect(narrow[1]).toMatch(/sh -c 'echo abcdef\S*…$/);

    const wide = visibleLines(await onTerminal(ctx, 'ps', { columns: 250 }));
    expect(wide[1]).toContain(`sh -c '${long}'`);

    const piped = String((await qwex(sb, ['ps'])).stdout).split('\n');
    expect(piped[1]).toMatch(/sh -c 'echo abcdef\S*…$/);
    expect(piped[1]!.slice(piped[1]!.indexOf('sh -c'))).toHaveLength(60);
  });

  it('qwex jobs fits it too', async (ctx) => {
    writeFileSync(join(sb.project, 'qwex.yaml'), `jobs:\n  train:\n    command: python train.py ${'--flag '.repeat(30)}\n`);
    const lines = visibleLines(await onTerminal(ctx, 'jobs', { columns: 60 }));
    expect(lines[1]).toMatch(/^train\s.*…$/);
    for (const line of lines) expect([...line].length).toBeLessThanOrEqual(60);
  });
});

describe('colour', () => {
  it('on a terminal unless NO_COLOR, --no-color or FORCE_COLOR=0; in a pipe only with FORCE_COLOR; --no-color wins over FORCE_COLOR', async (ctx) => {
    await someRuns(1, 'true');
    expect(await onTerminal(ctx, 'ps')).toMatch(ANSI);
    expect(await onTerminal(ctx, 'ps', { env: { NO_COLOR: '1' } })).not.toMatch(ANSI);
    expect(await onTerminal(ctx, 'ps --no-color')).not.toMatch(ANSI);
    expect(await onTerminal(ctx, '--no-color ps')).not.toMatch(ANSI);
    expect(await onTerminal(ctx, 'ps', { env: { FORCE_COLOR: '0' } })).not.toMatch(ANSI);
    expect(await onTerminal(ctx, 'ps --no-color', { env: { FORCE_COLOR: '1' } })).not.toMatch(ANSI);

    expect(String((await qwex(sb, ['ps'], { env: { NO_COLOR: '' } })).stdout)).not.toMatch(ANSI);
    const forced = String((await qwex(sb, ['ps'], { env: { NO_COLOR: '', FORCE_COLOR: '1' } })).stdout);
    expect(forced).toMatch(/\u001b\[32msucceeded\u001b\[0m/);
    // A run's own arguments are its own: --no-color after the command goes to the command.
    const passed = await qwex(sb, ['run', '-q', '--', 'sh', '-c', 'echo "$@"', 'sh', '--no-color']);
    expect(String(passed.stdout)).toBe('--no-color');
  });
});

describe('qwex --help', () => {
  it('ends with examples of the common tasks, each a command qwex has', async () => {
    const r = await qwex(sb, ['--help']);
    expect(r.exitCode).toBe(0);
    const help = String(r.stdout);
    const examples = help.slice(help.indexOf('Examples:'));
    expect(examples.length).toBeGreaterThan(100);
    const commands = [...help.slice(0, help.indexOf('Examples:')).matchAll(/^ {2}(\S+)/gm)].map((m) => m[1]!);
    const used = [...examples.matchAll(/^ {2}qwex (\S+)/gm)].map((m) => m[1]!);
    expect(used).toEqual(expect.arrayContaining(['init', 'run', 'ps', 'logs', 'attach', 'batch', 'cancel']));
    for (const command of used) expect(commands).toContain(command);
    expect(help).toContain('source <(qwex completion bash)');
  });
});

describe('qwex init', () => {
  /** A HOME with ~/.ssh/config and a kubeconfig, as a user would have them. */
  function homeWithHosts(): string {
    const home = join(sb.project, '..', 'home');
    mkdirSync(join(home, '.ssh'), { recursive: true });
    writeFileSync(join(home, '.ssh', 'config'), 'Host *\n  ServerAliveInterval 30\nHost gpu-box gpu-2\n  HostName 10.0.0.5\nHost=lab\n  User me\n');
    mkdirSync(join(home, '.kube'));
    writeFileSync(
      join(home, '.kube', 'config'),
      ['apiVersion: v1', 'kind: Config', 'current-context: kind-dev', 'contexts:', '  - name: prod', '    context: { cluster: prod, user: me }', '  - name: kind-dev', '    context: { cluster: kind, user: me }', 'clusters: []', 'users: []', ''].join('\n'),
    );
    return home;
  }

  it('writes a commented qwex.yaml with the engine, the first SSH host in effect and the cluster commented out; qwex reads it', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', await dockerUnavailable());
    const home = homeWithHosts();
    const env = { HOME: home, KUBECONFIG: '', DOCKER_HOST: 'unix:///var/run/docker.sock' };
    const r = await qwex(sb, ['init', '--json'], { env });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const report = JSON.parse(String(r.stdout)) as { path: string; backends: { backend: string; found: boolean; written: string; summary: string }[] };
    expect(report.path).toBe(join(sb.project, 'qwex.yaml'));
    const by = Object.fromEntries(report.backends.map((b) => [b.backend, b]));
    expect(by.docker).toMatchObject({ found: true, written: 'active', summary: expect.stringMatching(/^Docker engine \S+ at unix:\/\/\/var\/run\/docker\.sock$/) });
    expect(by.ssh).toMatchObject({ found: true, written: 'active', summary: expect.stringContaining('hosts gpu-box, gpu-2, lab') });
    // One remote backend is in effect (qwex batch goes there); the cluster found is offered, commented out.
    expect(by.k8s).toMatchObject({ found: true, written: 'commented', summary: expect.stringContaining('context kind-dev (current); also prod') });
    expect(by.kueue).toMatchObject({ found: false, written: 'commented' });
    const text = readFileSync(report.path, 'utf8');
    expect(text).toMatch(/^backend: local$/m);
    expect(text).toMatch(/^ {2}docker:\n {4}image: python:3\.12-slim$/m);
    expect(text).toMatch(/^ {2}ssh:\n {4}host: gpu-box$/m);
    expect(text).toMatch(/^ {2}# k8s:\n {2}# {3}context: kind-dev$/m);
    expect(text).toMatch(/^# jobs:$/m);
    // qwex reads what it wrote with its full schema.
    const jobs = await qwex(sb, ['jobs', '--json'], { env });
    expect(jobs.exitCode, String(jobs.stderr)).toBe(0);

    const again = await qwex(sb, ['init'], { env });
    expect(again.exitCode).toBe(2);
    expect(String(again.stderr)).toMatch(/qwex\.yaml already exists[\s\S]*hint: .*--force/);
    expect((await qwex(sb, ['init', '--force'], { env })).exitCode).toBe(0);
  });

  it('on a machine with nothing found, everything is commented out and the file is still valid', async () => {
    const home = join(sb.project, '..', 'empty-home');
    mkdirSync(home);
    const env = { HOME: home, KUBECONFIG: '', DOCKER_HOST: `unix://${join(home, 'no-docker.sock')}` };
    const r = await qwex(sb, ['init'], { env });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toMatch(/^wrote .*qwex\.yaml\nnot found docker: no Docker engine answers at unix:\/\/.*no-docker\.sock \(ENOENT\)$/m);
    const text = readFileSync(join(sb.project, 'qwex.yaml'), 'utf8');
    expect(text).toMatch(/^# backends:$/m);
    expect(text).not.toMatch(/^ {2}\w+:$/m);
    expect((await qwex(sb, ['jobs', '--json'], { env })).exitCode).toBe(0);
    const batch = await qwex(sb, ['batch', '--', 'true'], { env });
    expect(batch.exitCode).toBe(2);
    expect(String(batch.stderr)).toMatch(/no remote backend is configured for qwex batch\nhint: configure one in qwex\.yaml \(`qwex init`/);
  });
});

function readRecords(): Run[] {
  const dir = join(sb.project, '.qwex', 'runs');
  return readdirSync(dir).sort().map((id) => JSON.parse(readFileSync(join(dir, id, 'run.json'), 'utf8')) as Run);
}

describe('qwex batch: qwex run on the configured remote backend', () => {
  let reason: string | undefined;
  let base: string;
  let sshd: TestSshd;
  beforeAll(async () => {
    reason = await sshdUnavailable();
    if (reason !== undefined) return;
    base = mkdtempSync(join(tmpdir(), 'qwex-batch-'));
    sshd = await startSshd(base);
  });
  afterAll(async () => {
    await sshd?.stop();
    if (base) rmSync(base, { recursive: true, force: true });
  });

  it('runs the command over SSH and streams its output back, exiting with its code', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_SSHD', reason);
    sb.env.HOME = sshd.home;
    writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    host: ${sshd.alias}\n    root: ${join(base, 'remote')}\n`);
    writeFileSync(join(sb.project, 'train.sh'), 'echo "training in $PWD"; echo oops >&2; exit 4\n');
    const r = await qwex(sb, ['batch', '--', 'sh', 'train.sh']);
    expect(r.exitCode).toBe(4);
    expect(String(r.stdout)).toBe(`training in ${join(base, 'remote')}/runs/${readRecords()[0]!.id}/workspace`);
    expect(String(r.stderr)).toMatch(/^run \S+ started \(ssh\)\noops\nrun \S+ failed \(exit 4\)/);
    expect(readRecords()[0]).toMatchObject({ status: 'failed', exitCode: 4, backend: { name: 'ssh' } });
  });

  it('refuses a backend on this machine, and asks which when several remote ones are configured', async () => {
    const local = await qwex(sb, ['batch', '-b', 'local', '--', 'true']);
    expect(local.exitCode).toBe(2);
    expect(String(local.stderr)).toMatch(/qwex batch runs on another machine, and the local backend runs here\nhint: use qwex run -b local, or a remote backend: ssh, k8s, kueue/);
    writeFileSync(join(sb.project, 'qwex.yaml'), 'backends:\n  ssh:\n    host: a\n  k8s:\n    image: x\n');
    const two = await qwex(sb, ['batch', '--', 'true']);
    expect(two.exitCode).toBe(2);
    expect(String(two.stderr)).toMatch(/more than one remote backend is configured \(ssh, k8s\)\nhint: pass -b NAME to pick one of ssh, k8s, or set backend: in qwex\.yaml/);
  });
});
