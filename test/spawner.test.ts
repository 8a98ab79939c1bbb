import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readExitFile, shimArgs, findShim } from '../src/backends/local/shim.js';
import { Spawner } from '../src/backends/local/spawner.js';
import { processStartTime } from '../src/process/info.js';
import { ROOT, qwex, sandbox, until, type Sandbox } from './helpers.js';

// libexec/qwex-spawner, the process that forks qwexd's shims: its contract (top of qwex-spawner.c) run directly,
// then through a real qwexd whose spawner is killed.

const SPAWNER = join(ROOT, 'libexec', 'qwex-spawner');
const ENOENT = 2;
let unavailable: string | undefined;

beforeAll(() => {
  const cc = (process.env.CC?.trim() || 'cc').split(/\s+/)[0] ?? 'cc';
  if (spawnSync(cc, ['--version'], { stdio: 'ignore' }).error) {
    unavailable = `no C compiler (${cc}) to build libexec/qwex-spawner`;
    return;
  }
  // Built from this checkout's source, so that the binary under test is never a stale one.
  const build = spawnSync(process.execPath, [join(ROOT, 'scripts', 'build-shim.mjs')], { encoding: 'utf8', env: { ...process.env, CI: 'true' } });
  if (build.status !== 0) throw new Error(`scripts/build-shim.mjs failed: ${build.stderr}${build.stdout}`);
});

function skipUnlessBuilt(ctx: { skip(): void }): void {
  if (unavailable === undefined) return;
  if (process.env.CI === 'true' || process.env.QWEX_REQUIRE_CC === '1') throw new Error(`CI needs the spawner, but ${unavailable}`);
  console.log(`skipped: ${unavailable}`);
  ctx.skip();
}

const dirs: string[] = [];
const children: ChildProcess[] = [];
const pids: number[] = [];
let sb: Sandbox | undefined;
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const pid of pids.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  await sb?.cleanup();
  sb = undefined;
});

function tempDir(): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'qwex-spawner-test-')));
  dirs.push(dir);
  return dir;
}

/** The spawner run by hand: frames written, lines read. */
function startRaw(): { child: ChildProcess; lines: string[]; stderr: () => string; exited: Promise<number | null>; send(fields: string[]): void } {
  const child = spawn(SPAWNER, [], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  const lines: string[] = [];
  let buffered = '';
  let err = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  // 'close': the process ended and its pipes are read to the end.
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child,
    lines,
    stderr: () => err,
    exited,
    send: (fields) => {
      const payload = Buffer.from(`${fields.join('\0')}\0`);
      const header = Buffer.alloc(4);
      header.writeUInt32LE(payload.length);
      child.stdin!.write(Buffer.concat([header, payload]));
    },
  };
}

function shimCommand(dir: string, tag: string, command: string[]): string[] {
  const shim = findShim({ ...process.env, QWEX_SHIM: 'c' })!;
  const argv = shimArgs(shim, { runDir: dir, reportTag: tag }, command[0]!, command.slice(1));
  return [argv.file, ...argv.args];
}

describe('qwex-spawner', () => {
  it.for([
    ['the shim program', false],
    ['its built-in shim', true],
  ] as const)('starts %s with exactly the cwd, environment and log files asked for, and says so', async ([, builtinShim], ctx) => {
    skipUnlessBuilt(ctx);
    const base = tempDir();
    const dir = join(base, 'run');
    const cwd = join(base, 'work dir');
    mkdirSync(dir);
    mkdirSync(cwd);
    const spawner = new Spawner(SPAWNER);
    const [file, ...args] = shimCommand(dir, 'placeholder', ['sh', '-c', 'pwd; echo "$FOO"; env | grep -c . ; echo oops >&2; exit 3']);
    const outcome = await spawner.start((tag) => ({
      file: file!,
      args: args.map((a) => (a === 'placeholder' ? tag : a)),
      builtinShim,
      cwd,
      env: { FOO: 'bar baz', PATH: process.env.PATH ?? '/usr/bin:/bin' },
      stdoutPath: join(dir, 'stdout.log'),
      stderrPath: join(dir, 'stderr.log'),
    }));
    expect(outcome.report).toMatchObject({ kind: 'started', pid: expect.any(Number) });
    expect(outcome.shimPid).toEqual(expect.any(Number));
    const reaped = new Promise<void>((resolve) => spawner.onReaped(outcome.shimPid!, resolve));
    await reaped;
    expect(readExitFile(join(dir, 'exit.json'))).toEqual({ exitCode: 3, signal: null, errno: null, leftovers: 0 });
    // Two variables given, and whatever sh itself adds (PWD, SHLVL, _): nothing of the spawner's or the test's.
    const [pwd, foo, count] = readFileSync(join(dir, 'stdout.log'), 'utf8').trimEnd().split('\n');
    expect([pwd, foo]).toEqual([cwd, 'bar baz']);
    expect(Number(count)).toBeLessThanOrEqual(5);
    expect(readFileSync(join(dir, 'stderr.log'), 'utf8')).toBe('oops\n');
    expect(readdirSync(dir).sort()).toEqual(['exit.json', 'shim.json', 'stderr.log', 'stdout.log']);
  });

  it('runs its built-in shim for an empty program name: no exec, the process named qwex-shim, the same files', async (ctx) => {
    skipUnlessBuilt(ctx);
    const base = tempDir();
    const dir = join(base, 'run');
    mkdirSync(dir);
    const raw = startRaw();
    const [, ...args] = shimCommand(dir, 'b', ['sleep', '30']);
    raw.send(['b', '', base, join(dir, 'stdout.log'), join(dir, 'stderr.log'), String(args.length + 1), 'qwex-shim', ...args, `PATH=${process.env.PATH}`]);
    const pid = Number((await until(() => raw.lines.find((l) => l.startsWith('b started ')))).split(' ')[2]);
    pids.push(pid);
    const shimPid = Number(raw.lines.find((l) => l.startsWith('b forked '))!.split(' ')[2]);
    const shimState = JSON.parse(readFileSync(join(dir, 'shim.json'), 'utf8')) as { shimPid: number; pid: number };
    expect(shimState).toMatchObject({ shimPid, pid });
    expect(readFileSync(`/proc/${shimPid}/comm`, 'utf8').trim()).toBe('qwex-shim');
    // Not exec'd: the shim is the spawner's program, in its own session, parent of the command.
    expect(readlinkSync(`/proc/${shimPid}/exe`)).toBe(SPAWNER);
    expect(parentOf(pid)).toBe(shimPid);
    process.kill(pid, 'SIGKILL');
    await until(() => (raw.lines.some((l) => l.startsWith(`reaped ${shimPid} `)) ? true : undefined));
    expect(raw.lines).toContain(`reaped ${shimPid} 0`);
    expect(readExitFile(join(dir, 'exit.json'))).toMatchObject({ exitCode: null, signal: 9 });
  });

  it('says failed, and starts nothing, for a missing directory or program; then serves on', async (ctx) => {
    skipUnlessBuilt(ctx);
    const base = tempDir();
    const raw = startRaw();
    const out = join(base, 'out.log');
    raw.send(['a', '/bin/echo', join(base, 'missing'), out, out, '2', 'echo', 'never', 'PATH=/bin']);
    raw.send(['b', join(base, 'no-such-program'), base, out, out, '1', 'x']);
    raw.send(['c', '/bin/echo', base, out, out, '2', 'echo', 'served']);
    // Every line is there once all three children were reaped (a child's own line comes before its end).
    await until(() => (raw.lines.filter((l) => l.startsWith('reaped ')).length === 3 ? true : undefined));
    expect(raw.lines).toContain(`a failed ${ENOENT}`);
    expect(raw.lines).toContain(`b failed ${ENOENT}`);
    expect(readFileSync(out, 'utf8')).toBe('served\n');
    // Each child is reaped with its raw wait status: 127 << 8 for the two that could not exec, 0 for echo.
    const forked = Object.fromEntries(raw.lines.filter((l) => / forked /.test(l)).map((l) => [l.split(' ')[2], l.split(' ')[0]]));
    const statuses = Object.fromEntries(raw.lines.filter((l) => l.startsWith('reaped ')).map((l) => [forked[l.split(' ')[1]!], Number(l.split(' ')[2])]));
    expect(statuses).toEqual({ a: 127 << 8, b: 127 << 8, c: 0 });
  });

  it('ends with status 2 on a malformed request, and at once on EOF, leaving its shims running', async (ctx) => {
    skipUnlessBuilt(ctx);
    const bad = startRaw();
    bad.send(['bad tag!', '/bin/true', '/', '/dev/null', '/dev/null', '1', 'true']);
    expect(await bad.exited).toBe(2);
    expect(bad.stderr()).toContain('malformed request');

    const base = tempDir();
    const dir = join(base, 'run');
    mkdirSync(dir);
    const raw = startRaw();
    const [file, ...args] = shimCommand(dir, 't', ['sleep', '30']);
    raw.send(['t', file!, base, '/dev/null', '/dev/null', String(args.length + 1), file!, ...args, `PATH=${process.env.PATH}`]);
    const pid = Number((await until(() => raw.lines.find((l) => l.startsWith('t started ')))).split(' ')[2]);
    pids.push(pid);
    raw.child.stdin!.end();
    expect(await raw.exited).toBe(0);
    expect(processStartTime(pid)).toBeDefined(); // the command outlives the spawner
    // And its shim still records how it ends.
    process.kill(pid, 'SIGKILL');
    await until(() => (existsSync(join(dir, 'exit.json')) ? true : undefined));
    expect(readExitFile(join(dir, 'exit.json'))).toMatchObject({ exitCode: null, signal: 9 });
  });
});

describe('Spawner', () => {
  /** A stand-in for qwex-spawner that ignores its request and prints `lines`: the orders the real one can produce. */
  function scriptedSpawner(lines: string): string {
    const path = join(tempDir(), 'scripted-spawner');
    writeFileSync(path, `#!/bin/sh\nhead -c 4 >/dev/null\nprintf '${lines}'\nsleep 5\n`, { mode: 0o755 });
    return path;
  }
  const request = () => ({ file: '/bin/echo', args: [], cwd: '/', env: {}, stdoutPath: '/dev/null', stderrPath: '/dev/null' });

  it('waits for both lines of a start, whichever comes first: the child may write before its parent', async () => {
    const childFirst = await new Spawner(scriptedSpawner('r1 started 123\\nr1 forked 456\\n')).start(request);
    expect(childFirst).toEqual({ report: { kind: 'started', pid: 123 }, shimPid: 456 });
    const parentFirst = await new Spawner(scriptedSpawner('r1 forked 456\\nr1 exists\\n')).start(request);
    expect(parentFirst).toEqual({ report: { kind: 'exists' }, shimPid: 456 });
  });

  it('takes "nofork" as the only line of a start no process could be made for', async () => {
    expect(await new Spawner(scriptedSpawner('r1 nofork 11\\n')).start(request)).toEqual({ report: { kind: 'failed', errno: 11 } });
  });

  it('answers a request its spawner died before forking as such, so that it may be sent again', async () => {
    // /bin/true stands in for a spawner killed before it read the request: it exits without a word.
    const outcome = await new Spawner('/bin/true').start(() => ({ file: '/bin/echo', args: [], cwd: '/', env: {}, stdoutPath: '/dev/null', stderrPath: '/dev/null' }));
    expect(outcome).toEqual({ report: undefined, spawnerDied: true });
  });
});

describe('qwexd with its spawner', () => {
  it('starts shims through one spawner, and starts another when it is killed, losing no run', async (ctx) => {
    skipUnlessBuilt(ctx);
    sb = sandbox();
    const box = sb;
    expect((await qwex(box, ['daemon', 'start', '--concurrency', '2'])).exitCode).toBe(0);
    const daemonPid = Number(readFileSync(join(box.runtime, 'qwexd.pid'), 'utf8'));
    const longId = String((await qwex(box, ['run', '-d', '--', 'sh', '-c', 'sleep 1; exit 5'])).stdout).trim();
    const shimFile = join(box.project, '.qwex', 'runs', longId, 'shim.json');
    const shimPid = await until(() => (existsSync(shimFile) ? (JSON.parse(readFileSync(shimFile, 'utf8')) as { shimPid: number }).shimPid : undefined));
    const spawnerPid = parentOf(shimPid);
    expect(readFileSync(`/proc/${spawnerPid}/cmdline`, 'utf8').split('\0')[0]).toBe(SPAWNER);
    expect(parentOf(spawnerPid)).toBe(daemonPid);

    process.kill(spawnerPid, 'SIGKILL');
    const ids = String((await qwex(box, ['run', '-d', '--', 'sh', '-c', 'exit 7'])).stdout).trim();
    const w = await qwex(box, ['wait', ids, longId]);
    expect(w.exitCode, String(w.stderr)).not.toBe(0);
    for (const [id, code] of [[longId, 5], [ids, 7]] as const) {
      const run = JSON.parse(readFileSync(join(box.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as { status: string; exitCode: number };
      expect(run).toMatchObject({ status: 'failed', exitCode: code });
    }
    // The second run's shim came from a new spawner, qwexd's child too.
    const second = JSON.parse(readFileSync(join(box.project, '.qwex', 'runs', ids, 'shim.json'), 'utf8')) as { shimPid: number };
    expect(second.shimPid).not.toBe(shimPid);
    const spawners = spawnSync('pgrep', ['-P', String(daemonPid), '-f', SPAWNER], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
    expect(spawners).toHaveLength(1);
    expect(Number(spawners[0])).not.toBe(spawnerPid);
  });
});

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}
