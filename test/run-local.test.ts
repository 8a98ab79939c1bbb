import { createHash } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Run } from '../src/run/model.js';
import { CLI, FIXTURES, isAlive, qwex, qwexJson, sandbox, until, type Sandbox } from './helpers.js';

const node = process.execPath;
const fixture = (name: string): string => join(FIXTURES, name);

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

function readRun(id: string): Run {
  return JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as Run;
}

function onlyRunId(): string {
  const ids = readdirSync(join(sb.project, '.qwex', 'runs'));
  expect(ids).toHaveLength(1);
  return ids[0]!;
}

describe('foreground qwex run', () => {
  it('passes output through and exits 0 on success', async () => {
    const r = await qwex(sb, ['run', node, fixture('print-env.mjs'), 'a b', '--flag']);
    expect(r.exitCode).toBe(0);
    const seen = JSON.parse(String(r.stdout)) as Record<string, unknown>;
    const id = onlyRunId();
    expect(seen).toMatchObject({
      QWEX_RUN_ID: id,
      QWEX_RUN_DIR: join(sb.project, '.qwex', 'runs', id),
      PYTHONUNBUFFERED: '1',
      cwd: sb.project,
      argv: ['a b', '--flag'],
    });
    expect(String(r.stderr)).toMatch(new RegExp(`run ${id.slice(0, 13)} started \\(local\\)`));
    expect(String(r.stderr)).toMatch(/succeeded in .* · no artifacts/);
    const run = readRun(id);
    expect(run).toMatchObject({ status: 'succeeded', exitCode: 0, signal: null, endReason: 'exit' });
    expect(Date.parse(run.finishedAt!)).toBeGreaterThanOrEqual(Date.parse(run.startedAt!));
  });

  it('passes the exit code through and records the failure', async () => {
    const r = await qwex(sb, ['run', node, fixture('exit-with.mjs'), '42']);
    expect(r.exitCode).toBe(42);
    expect(readRun(onlyRunId())).toMatchObject({ status: 'failed', exitCode: 42, endReason: 'exit' });
    expect(String(r.stderr)).toMatch(/failed \(exit 42\)/);
  });

  it('reports a signal as 128+n and records it', async () => {
    const r = await qwex(sb, ['run', node, fixture('exit-with.mjs'), 'SIGKILL']);
    expect(r.exitCode).toBe(137);
    expect(readRun(onlyRunId())).toMatchObject({ status: 'failed', exitCode: null, signal: 'SIGKILL', endReason: 'signal' });
  });

  it('keeps stdout and stderr apart, in the terminal and in the logs', async () => {
    const r = await qwex(sb, ['run', '--quiet', '--', 'sh', '-c', 'echo out1; echo err1 >&2; echo out2; echo err2 >&2']);
    expect(r.exitCode).toBe(0);
    expect(String(r.stdout)).toBe('out1\nout2');
    expect(String(r.stderr)).toBe('err1\nerr2');
    const dir = join(sb.project, '.qwex', 'runs', onlyRunId());
    expect(readFileSync(join(dir, 'stdout.log'), 'utf8')).toBe('out1\nout2\n');
    expect(readFileSync(join(dir, 'stderr.log'), 'utf8')).toBe('err1\nerr2\n');
  });

  it('runs several arguments as an argv, with no shell', async () => {
    const r = await qwex(sb, ['run', '--quiet', '--', 'echo', '$HOME', '*', 'a;b']);
    expect(String(r.stdout)).toBe('$HOME * a;b');
    const run = readRun(onlyRunId());
    expect(run.job).toMatchObject({ shell: false, command: ['echo', '$HOME', '*', 'a;b'] });
  });

  it('runs a single argument with shell syntax through /bin/sh -c', async () => {
    const r = await qwex(sb, ['run', '--quiet', 'echo one | tr a-z A-Z && exit 7']);
    expect(r.exitCode).toBe(7);
    expect(String(r.stdout)).toBe('ONE');
    expect(readRun(onlyRunId()).job).toMatchObject({ shell: true, command: ['echo one | tr a-z A-Z && exit 7'] });
  });

  it('records a missing command as failed with exit 127 and "command not found"', async () => {
    const r = await qwex(sb, ['run', 'no-such-command-qwex']);
    expect(r.exitCode).toBe(127);
    expect(String(r.stderr)).toContain('command not found: no-such-command-qwex');
    const run = readRun(onlyRunId());
    expect(run).toMatchObject({ status: 'failed', exitCode: 127, endReason: 'error', error: { code: 'QWEX_COMMAND_NOT_FOUND' } });
  });

  it('records a file that is not executable as exit 126', async () => {
    const script = join(sb.project, 'not-exec.sh');
    writeFileSync(script, '#!/bin/sh\necho hi\n');
    chmodSync(script, 0o644);
    const r = await qwex(sb, ['run', './not-exec.sh']);
    expect(r.exitCode).toBe(126);
    expect(readRun(onlyRunId())).toMatchObject({ status: 'failed', exitCode: 126 });
  });

  it('sets --env variables and takes a bare name from the environment', async () => {
    const r = await qwex(sb, ['run', '-q', '-e', 'FOO', node, fixture('print-env.mjs')], { env: { FOO: 'from-shell' } });
    expect(JSON.parse(String(r.stdout))).toMatchObject({ FOO: 'from-shell' });
    const r2 = await qwex(sb, ['run', '-q', '-e', 'FOO=bar=baz', node, fixture('print-env.mjs')]);
    expect(JSON.parse(String(r2.stdout))).toMatchObject({ FOO: 'bar=baz' });
  });

  it('runs in the directory it was started from, inside the project', async () => {
    const sub = join(sb.project, 'sub');
    await execa('mkdir', ['-p', sub]);
    await execa('git', ['init', '-q', sb.project]);
    const r = await qwex(sb, ['run', '-q', node, fixture('print-env.mjs')], { cwd: sub });
    expect(JSON.parse(String(r.stdout))).toMatchObject({ cwd: sub });
    // The run belongs to the project root (found by .git), not to the subdirectory.
    expect(existsSync(join(sb.project, '.qwex', 'runs'))).toBe(true);
    expect(existsSync(join(sub, '.qwex'))).toBe(false);
  });

  it('streams 100 MB of fast output without losing a byte', async () => {
    const size = 100 * 1024 * 1024;
    const child = execa(node, [CLI, 'run', '-q', node, fixture('flood.mjs'), String(size)], {
      cwd: sb.project,
      env: sb.env,
      reject: false,
      buffer: { stdout: false },
    });
    const hash = createHash('sha256');
    let received = 0;
    child.stdout!.on('data', (chunk: Buffer) => {
      received += chunk.length;
      hash.update(chunk);
    });
    const r = await child;
    expect(r.exitCode).toBe(0);
    expect(received).toBe(size);
    const log = join(sb.project, '.qwex', 'runs', onlyRunId(), 'stdout.log');
    expect(statSync(log).size).toBe(size);
    expect(createHash('sha256').update(readFileSync(log)).digest('hex')).toBe(hash.digest('hex'));
    expect(String(r.stderr)).toBe('done');
  }, 120_000);

  it.each(['c', 'perl', 'none'])('works with the %s shim (none: the command is then the monitor\'s own child)', async (kind) => {
    const env = { QWEX_SHIM: kind };
    const ok = await qwex(sb, ['run', '-q', '--', 'sh', '-c', 'echo fine; exit 4'], { env });
    expect(ok.exitCode, String(ok.stderr)).toBe(4);
    expect(String(ok.stdout)).toBe('fine');
    const missing = await qwex(sb, ['run', 'no-such-command-qwex'], { env });
    expect(missing.exitCode).toBe(127);
    const runs = readdirSync(join(sb.project, '.qwex', 'runs')).sort().map(readRun);
    const shimmed = kind !== 'none';
    expect(runs.map((r) => [r.status, r.exitCode, typeof r.backend.shimPid])).toEqual([['failed', 4, shimmed ? 'number' : 'undefined'], ['failed', 127, 'undefined']]);
  });

  it('stops a run at --timeout and records why', async () => {
    const r = await qwex(sb, ['run', '--timeout', '300ms', '--grace', '1s', '--', 'sleep', '30']);
    expect(r.exitCode).toBe(128 + 15);
    expect(readRun(onlyRunId())).toMatchObject({ status: 'failed', endReason: 'timeout', signal: 'SIGTERM', error: { code: 'QWEX_TIMEOUT' } });
  });
});

describe('runs outlive the CLI', () => {
  it('records the final status of a foreground run whose CLI was killed with SIGKILL', async () => {
    const cli = execa(node, [CLI, 'run', '--', node, fixture('ticker.mjs'), '8', '100'], { cwd: sb.project, env: sb.env, reject: false });
    const id = await until(() => (existsSync(join(sb.project, '.qwex', 'runs')) ? readdirSync(join(sb.project, '.qwex', 'runs'))[0] : undefined));
    await until(() => (readRun(id).status === 'running' ? true : undefined));
    cli.kill('SIGKILL');
    await cli;
    const run = await until(() => {
      const r = readRun(id);
      return r.status === 'succeeded' ? r : undefined;
    }, 15_000, 'the run to finish after its CLI died');
    expect(run.exitCode).toBe(0);
    const log = readFileSync(join(sb.project, '.qwex', 'runs', id, 'stdout.log'), 'utf8');
    expect(log.trim().split('\n')).toEqual(Array.from({ length: 8 }, (_, i) => `tick ${i + 1}`));
  });

  it('--detach prints only the id, returns at once, and the outcome is still recorded', async () => {
    const started = Date.now();
    const r = await qwex(sb, ['run', '--detach', '--', 'sh', '-c', 'sleep 1; echo finished; exit 3']);
    expect(Date.now() - started).toBeLessThan(5_000); // the run itself takes 1 s; returning must not wait for it
    const id = String(r.stdout);
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(String(r.stderr)).toBe('');
    expect(['pending', 'running']).toContain(readRun(id).status);
    const w = await qwex(sb, ['wait', id]);
    expect(w.exitCode).toBe(3);
    expect(readRun(id)).toMatchObject({ status: 'failed', exitCode: 3 });
    const logs = await qwex(sb, ['logs', id.slice(0, 20)]);
    expect(String(logs.stdout)).toBe('finished');
  });

  it('logs -f follows until the end and exits with the run\'s code', async () => {
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'for i in 1 2 3; do echo line $i; sleep 0.2; done; exit 5'])).stdout);
    const r = await qwex(sb, ['logs', '-f', id]);
    expect(r.exitCode).toBe(5);
    expect(String(r.stdout)).toBe('line 1\nline 2\nline 3');
  });

  it('wait on several runs exits with the code of the first that did not succeed', async () => {
    const ok = String((await qwex(sb, ['run', '-d', 'true'])).stdout);
    const bad = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'sleep 0.3; exit 4'])).stdout);
    const worse = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'exit 9'])).stdout);
    const r = await qwex(sb, ['wait', ok, bad, worse, '--json']);
    expect(r.exitCode).toBe(4);
    const runs = JSON.parse(String(r.stdout)) as Run[];
    expect(runs.map((run) => run.status)).toEqual(['succeeded', 'failed', 'failed']);
  });
});

describe('cancel', () => {
  async function startTree(extra: string[] = []): Promise<{ id: string; pids: { parent: number; child: number } }> {
    const pidfile = join(sb.project, 'pids.json');
    const id = String((await qwex(sb, ['run', '-d', ...extra, '--', node, fixture('tree.mjs'), pidfile, ...(extra.includes('--ignore-term') ? [] : [])])).stdout);
    const pids = await until(() => (existsSync(pidfile) ? (JSON.parse(readFileSync(pidfile, 'utf8')) as { parent: number; child: number }) : undefined));
    return { id, pids };
  }

  it('stops the whole process tree and records the run as cancelled', async () => {
    const { id, pids } = await startTree();
    expect(isAlive(pids.child)).toBe(true);
    const r = await qwex(sb, ['cancel', id.slice(0, 18), '--json']);
    expect(r.exitCode).toBe(0);
    const [run] = JSON.parse(String(r.stdout)) as Run[];
    expect(run).toMatchObject({ id, status: 'cancelled', endReason: 'cancel', signal: 'SIGTERM' });
    await until(() => (!isAlive(pids.parent) && !isAlive(pids.child) ? true : undefined), 5_000, 'the tree to die');
    expect((await qwex(sb, ['wait', id])).exitCode).toBe(130);
  });

  it('kills a process that ignores SIGTERM after the grace period', async () => {
    const pidfile = join(sb.project, 'pids.json');
    const id = String((await qwex(sb, ['run', '-d', '--', node, fixture('tree.mjs'), pidfile, '--ignore-term'])).stdout);
    const pids = await until(() => (existsSync(pidfile) ? (JSON.parse(readFileSync(pidfile, 'utf8')) as { parent: number; child: number }) : undefined));
    const started = Date.now();
    const r = await qwex(sb, ['cancel', '--grace', '500ms', id, '--json']);
    const [run] = JSON.parse(String(r.stdout)) as Run[];
    expect(run).toMatchObject({ status: 'cancelled', signal: 'SIGKILL' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    await until(() => (!isAlive(pids.parent) && !isAlive(pids.child) ? true : undefined), 5_000, 'the tree to die');
  });

  it('refuses to cancel a run that already ended, with exit code 10', async () => {
    await qwex(sb, ['run', 'true']);
    const id = onlyRunId();
    const r = await qwex(sb, ['cancel', id]);
    expect(r.exitCode).toBe(10);
    expect(String(r.stderr)).toContain(`run ${id} already ended (succeeded)`);
  });

  it('Ctrl-C on a foreground run cancels it, records it, and exits 130', async () => {
    const pidfile = join(sb.project, 'pids.json');
    const cli = execa(node, [CLI, 'run', '--', node, fixture('tree.mjs'), pidfile], { cwd: sb.project, env: sb.env, reject: false });
    const pids = await until(() => (existsSync(pidfile) ? (JSON.parse(readFileSync(pidfile, 'utf8')) as { parent: number; child: number }) : undefined));
    cli.kill('SIGINT');
    const r = await cli;
    expect(r.exitCode).toBe(130);
    expect(String(r.stderr)).toMatch(/cancelled/);
    expect(readRun(onlyRunId())).toMatchObject({ status: 'cancelled', endReason: 'cancel' });
    await until(() => (!isAlive(pids.parent) && !isAlive(pids.child) ? true : undefined), 5_000, 'the tree to die');
  });
});

describe('listing and looking up runs', () => {
  it('ps lists this project\'s runs newest last; --all adds other projects', async () => {
    await qwex(sb, ['run', '--name', 'first', 'true']);
    await qwex(sb, ['run', 'false']);
    const other = join(sb.project, '..', 'other');
    await execa('mkdir', ['-p', join(other, '.qwex')]);
    await qwex(sb, ['run', 'true'], { cwd: other });

    const mine = await qwexJson<{ id: string; status: string; name: string | null; project: string }[]>(sb, ['ps']);
    expect(mine.map((r) => [r.status, r.name])).toEqual([['succeeded', 'first'], ['failed', null]]);
    expect(mine[0]!.id < mine[1]!.id).toBe(true);
    const all = await qwexJson<{ project: string }[]>(sb, ['ps', '--all']);
    expect(all.map((r) => r.project)).toEqual([sb.project, sb.project, other]);
    const failed = await qwexJson<unknown[]>(sb, ['ps', '--status', 'failed']);
    expect(failed).toHaveLength(1);
    const text = await qwex(sb, ['ps']);
    expect(String(text.stdout).split('\n')[0]).toMatch(/^ID\s+STATUS\s+EXIT\s+CREATED\s+DURATION\s+BACKEND\s+NAME\s+COMMAND$/);
  });

  it('resolves unique prefixes and lists the candidates of an ambiguous one', async () => {
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(String((await qwex(sb, ['run', '-d', 'true'])).stdout));
    await qwex(sb, ['wait', ...ids]);
    const status = await qwexJson<Run>(sb, ['status', ids[1]!.slice(0, 30)]);
    expect(status.id).toBe(ids[1]);
    const ambiguous = await qwex(sb, ['status', ids[0]!.slice(0, 4)]);
    expect(ambiguous.exitCode).toBe(4);
    for (const id of ids) expect(String(ambiguous.stderr)).toContain(id);
    const missing = await qwex(sb, ['status', 'ffffffff']);
    expect(missing.exitCode).toBe(3);
    expect(String(missing.stderr)).toContain('no run matches "ffffffff"');
    const bad = await qwex(sb, ['logs', 'not-an-id!']);
    expect(bad.exitCode).toBe(2);
  });

  it('masks secret-looking environment values in status and in ps', async () => {
    await qwex(sb, ['run', '-e', 'API_TOKEN=s3cr3t-value', '-e', 'PLAIN=visible', '--', 'echo', 'PASSWORD=hunter2']);
    const id = onlyRunId();
    const status = await qwex(sb, ['status', id, '--json']);
    expect(String(status.stdout)).not.toContain('s3cr3t-value');
    expect(JSON.parse(String(status.stdout)).job.env).toEqual({ API_TOKEN: '***', PLAIN: 'visible' });
    const ps = await qwex(sb, ['ps']);
    expect(String(ps.stdout)).not.toContain('hunter2');
    expect(String(ps.stdout)).toContain('PASSWORD=***');
  });
});

describe('qwex itself', () => {
  it('--version prints the package version; --help lists the commands', async () => {
    const pkg = JSON.parse(readFileSync(join(FIXTURES, '..', '..', 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await qwex(sb, [flag]);
      expect(r.exitCode).toBe(0);
      expect(String(r.stdout)).toBe(pkg.version);
    }
    const help = await qwex(sb, ['--help']);
    expect(help.exitCode).toBe(0);
    for (const command of ['run', 'submit', 'ps', 'logs', 'attach', 'status', 'wait', 'cancel', 'artifacts', 'diff', 'gc', 'doctor', 'daemon']) {
      expect(String(help.stdout)).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
  });
});

describe('bad input', () => {
  it('exits 2 with a usage error for an unknown flag or a bad duration', async () => {
    const r = await qwex(sb, ['ps', '--bogus']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toMatch(/unknown option '--bogus'/);
    const d = await qwex(sb, ['run', '--timeout', 'soon', 'true']);
    expect(d.exitCode).toBe(2);
    expect(String(d.stderr)).toContain('--timeout: "soon" is not a duration');
    expect(existsSync(join(sb.project, '.qwex', 'runs'))).toBe(false);
  });

  it('reports an unwritable .qwex/ clearly and records nothing', async () => {
    if (process.getuid?.() === 0) {
      // root ignores permission bits; a file where the directory should be fails for everyone.
      writeFileSync(join(sb.project, '.qwex'), 'not a directory');
    } else {
      await execa('mkdir', ['-p', join(sb.project, '.qwex')]);
      chmodSync(join(sb.project, '.qwex'), 0o500);
    }
    const r = await qwex(sb, ['run', 'true']);
    expect(r.exitCode).toBe(6);
    expect(String(r.stderr)).toMatch(/cannot create the run directory/);
  });

  it('an unknown backend is refused before anything runs', async () => {
    const r = await qwex(sb, ['run', '--backend', 'mainframe', 'true']);
    expect(r.exitCode).toBe(9);
    expect(String(r.stderr)).toContain('backend "mainframe" is not available');
    expect(existsSync(join(sb.project, '.qwex', 'runs'))).toBe(false);
  });
});
