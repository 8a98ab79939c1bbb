import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, realpathSync, rmSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QwexError } from '../src/errors.js';
import { processStartTime } from '../src/process/info.js';
import { findShim, parseShimReport, readExitFile, readShimState, shimArgs, ShimExitStatus, type ShimKind, type ShimProgram } from '../src/backends/local/shim.js';
import { ROOT, sleep, until } from './helpers.js';

// The real shims, run directly: no other part of qwex is involved.

const linux = process.platform === 'linux';
const SIGKILL = 9;
const ENOENT = 2;
const EACCES = 13;
const EINVAL = 22;
const ENOSPC = 28;

let cUnavailable: string | undefined;

beforeAll(() => {
  // Build from this checkout's source, so that the binary under test is never a stale one.
  const cc = (process.env.CC?.trim() || 'cc').split(/\s+/)[0] ?? 'cc';
  const probe = spawnSync(cc, ['--version'], { stdio: 'ignore' });
  if (probe.error) {
    cUnavailable = `no C compiler (${cc}) to build libexec/qwex-shim`;
    return;
  }
  const build = spawnSync(process.execPath, [join(ROOT, 'scripts', 'build-shim.mjs')], { encoding: 'utf8', env: { ...process.env, CI: 'true' } });
  if (build.status !== 0) throw new Error(`scripts/build-shim.mjs failed: ${build.stderr}${build.stdout}`);
});

const dirs: string[] = [];
const started: ChildProcess[] = [];
const mounts: string[] = [];

afterEach(() => {
  for (const child of started.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  for (const mount of mounts.splice(0)) spawnSync('umount', ['-l', mount], { stdio: 'ignore' });
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'qwex-shim-test-')));
  dirs.push(dir);
  return dir;
}

/** A fresh run directory inside a fresh temporary directory (`base` for the test's other files). */
function runDir(): { base: string; dir: string } {
  const base = tempDir();
  const dir = join(base, 'run');
  mkdirSync(dir);
  return { base, dir };
}

function shimOf(kind: ShimKind): ShimProgram {
  const shim = findShim({ ...process.env, QWEX_SHIM: kind });
  if (shim === null) throw new Error(`no ${kind} shim`);
  return shim;
}

interface Running {
  child: ChildProcess;
  /** Everything the shim wrote on fd 3 (settles at EOF). */
  report: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout: () => string;
  stderr: () => string;
}

/** Starts a shim as qwex does: its own session, fd 3 a pipe back to us. */
function startShim(kind: ShimKind, options: { runDir: string; exitFallback?: string; graceMs?: number }, command: string[], env: NodeJS.ProcessEnv = {}): Running {
  const [file, ...args] = command;
  const argv = shimArgs(shimOf(kind), options, file!, args);
  const child = spawn(argv.file, argv.args, { detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  started.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const fd3 = child.stdio[3] as NodeJS.ReadableStream;
  const report = new Promise<string>((resolve) => {
    let text = '';
    fd3.on('data', (chunk: Buffer) => (text += chunk.toString()));
    fd3.on('end', () => resolve(text));
    fd3.on('error', () => resolve(text));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, report, exited, stdout: () => out, stderr: () => err };
}

/** sh -c SCRIPT, with the test's directory as $1. */
function sh(script: string, base: string): string[] {
  return ['sh', '-c', script, 'sh', base];
}

/** True once the process is gone; a zombie counts as gone (it has ended, only nobody reaped it yet). */
function gone(pid: number): boolean {
  return processStartTime(pid) === undefined;
}

function readPids(path: string): number[] {
  return readFileSync(path, 'utf8').split('\n').filter(Boolean).map(Number);
}

function processState(pid: number): string | undefined {
  if (linux) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return undefined;
    }
  }
  const r = spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' });
  return r.stdout.trim().slice(0, 1) || undefined;
}

describe.each(['c', 'perl'] as const)('%s shim', (kind) => {
  function skipUnlessBuilt(ctx: { skip(): void }): void {
    if (kind !== 'c' || cUnavailable === undefined) return;
    if (process.env.CI === 'true' || process.env.QWEX_REQUIRE_CC === '1') throw new Error(`CI needs the C shim, but ${cUnavailable}`);
    console.log(`skipped: ${cUnavailable}`);
    ctx.skip();
  }

  it.for([0, 1, 42, 255])('passes exit code %i through exactly, and says who runs it', async (code, ctx) => {
    skipUnlessBuilt(ctx);
    const { dir } = runDir();
    const run = startShim(kind, { runDir: dir }, ['sh', '-c', `exit ${code}`]);
    const report = parseShimReport(await run.report);
    expect(report?.kind).toBe('started');
    expect(await run.exited).toEqual({ code: 0, signal: null });
    expect(readExitFile(join(dir, 'exit.json'))).toEqual({ exitCode: code, signal: null, errno: null, leftovers: 0 });
    const state = readShimState(dir);
    expect(state).toMatchObject({ state: 'started', shimPid: run.child.pid, pid: report?.kind === 'started' ? report.pid : -1, pgid: report?.kind === 'started' ? report.pid : -1 });
    if (linux) expect(state).toMatchObject({ shimStartTime: expect.stringMatching(/^\d+$/), startTime: expect.stringMatching(/^\d+$/) });
    // Nothing is left behind but the two files.
    expect(readdirSync(dir).sort()).toEqual(['exit.json', 'shim.json']);
  });

  it('records a death by signal as the signal', async (ctx) => {
    skipUnlessBuilt(ctx);
    const { dir } = runDir();
    const run = startShim(kind, { runDir: dir }, ['sh', '-c', 'kill -KILL $$']);
    expect(parseShimReport(await run.report)?.kind).toBe('started');
    await run.exited;
    expect(readExitFile(join(dir, 'exit.json'))).toEqual({ exitCode: null, signal: SIGKILL, errno: null, leftovers: 0 });
  });

  it.for([
    ['an absolute path that does not exist', '/nonexistent/qwex-no-such-program'],
    ['a name found nowhere in PATH', 'qwex-no-such-program'],
  ] as const)('reports a program not found (%s) as 127 with ENOENT, on fd 3 and in exit.json', async ([, program], ctx) => {
    skipUnlessBuilt(ctx);
    const { dir } = runDir();
    const run = startShim(kind, { runDir: dir }, [program]);
    expect(parseShimReport(await run.report)).toEqual({ kind: 'failed', errno: ENOENT });
    expect(await run.exited).toEqual({ code: 0, signal: null });
    expect(readExitFile(join(dir, 'exit.json'))).toEqual({ exitCode: 127, signal: null, errno: ENOENT, leftovers: 0 });
  });

  it('reports a program that is not executable as 126 with EACCES', async (ctx) => {
    skipUnlessBuilt(ctx);
    const { base, dir } = runDir();
    const program = join(base, 'not-executable');
    writeFileSync(program, '#!/bin/sh\nexit 0\n');
    chmodSync(program, 0o644);
    const run = startShim(kind, { runDir: dir }, [program]);
    expect(parseShimReport(await run.report)).toEqual({ kind: 'failed', errno: EACCES });
    await run.exited;
    expect(readExitFile(join(dir, 'exit.json'))).toEqual({ exitCode: 126, signal: null, errno: EACCES, leftovers: 0 });
  });

  it('writes shim.json completely before the command runs', async (ctx) => {
    skipUnlessBuilt(ctx);
    const { base, dir } = runDir();
    const run = startShim(kind, { runDir: dir }, sh('cat "$1/run/shim.json" > "$1/seen.json"; echo $$ > "$1/self.pid"; cat /proc/$$/stat > "$1/self.stat" 2>/dev/null; exit 0', base));
    await run.exited;
    const seen = readFileSync(join(base, 'seen.json'), 'utf8');
    expect(seen).toBe(readFileSync(join(dir, 'shim.json'), 'utf8'));
    const self = Number(readFileSync(join(base, 'self.pid'), 'utf8'));
    expect(JSON.parse(seen)).toMatchObject({ shimPid: run.child.pid, pid: self, pgid: self });
    if (linux) {
      // The same token src/process-info.ts reads, taken by the command itself.
      const stat = readFileSync(join(base, 'self.stat'), 'utf8');
      expect(JSON.parse(seen).startTime).toBe(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    }
  });

  it('gives the command descriptors 0-2 only, whatever the shim inherited', async (ctx) => {
    skipUnlessBuilt(ctx);
    if (!linux) return ctx.skip();
    const { dir } = runDir();
    // Probed with stat (test -e), which opens nothing; no redirection either, since dash keeps a saved copy of a redirected descriptor.
    const probe = 'n=0; open=; while [ $n -lt 64 ]; do [ -e /proc/$$/fd/$n ] && open="$open $n"; n=$((n + 1)); done; echo $open';
    const argv = shimArgs(shimOf(kind), { runDir: dir }, 'sh', ['-c', probe]);
    // fd 3 (the report pipe) and fd 4 (anything else) are open in the shim.
    const child = spawn(argv.file, argv.args, { detached: true, stdio: ['ignore', 'pipe', 'ignore', 'pipe', 'pipe'] });
    started.push(child);
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await new Promise((resolve) => child.on('exit', resolve));
    await until(() => (out.endsWith('\n') ? true : undefined), 5000, 'the listing');
    expect(out.trim().split(' ').map(Number).sort()).toEqual([0, 1, 2]);
  });

  it('reports exists, and runs nothing, when another shim already started the run', async (ctx) => {
    skipUnlessBuilt(ctx);
    const { base, dir } = runDir();
    const first = startShim(kind, { runDir: dir }, ['true']);
    await first.exited;
    const shimJson = readFileSync(join(dir, 'shim.json'), 'utf8');
    const exitJson = readFileSync(join(dir, 'exit.json'), 'utf8');
    const second = startShim(kind, { runDir: dir }, sh('touch "$1/ran"', base));
    expect(parseShimReport(await second.report)).toEqual({ kind: 'exists' });
    expect(await second.exited).toEqual({ code: ShimExitStatus.exists, signal: null });
    expect(existsSync(join(base, 'ran'))).toBe(false);
    expect(readFileSync(join(dir, 'shim.json'), 'utf8')).toBe(shimJson);
    expect(readFileSync(join(dir, 'exit.json'), 'utf8')).toBe(exitJson);
  });

  it('never runs the command when the shim is killed before releasing it', async (ctx) => {
    skipUnlessBuilt(ctx);
    const { base, dir } = runDir();
    const run = startShim(kind, { runDir: dir }, sh('touch "$1/ran"', base), { QWEX_SHIM_TEST_STOP_BEFORE_GO: '1' });
    // The test hook stops the shim right after shim.json, before "go".
    await until(() => (processState(run.child.pid!) === 'T' ? true : undefined), 10_000, 'the shim to stop before go');
    const state = readShimState(dir);
    if (state?.state !== 'started') throw new Error(`shim.json incomplete: ${JSON.stringify(state)}`);
    expect(gone(state.pid)).toBe(false); // the child exists, blocked
    run.child.kill('SIGKILL');
    await run.exited;
    await until(() => (gone(state.pid) ? true : undefined), 10_000, 'the blocked child to exit');
    expect(existsSync(join(base, 'ran'))).toBe(false);
    expect(existsSync(join(dir, 'exit.json'))).toBe(false);
    expect(await run.report).toBe('');
  });

  it('forwards SIGTERM to the command and to a grandchild it started', async (ctx) => {
    skipUnlessBuilt(ctx);
    const { base, dir } = runDir();
    // The command survives SIGTERM (a trap) and exits 7 only once the grandchild saw SIGTERM too.
    // For the C shim the grandchild left the group with setsid: only a walk of the tree finds it.
    const leave = kind === 'c' && linux ? 'setsid ' : '';
    const grandchild = `trap 'touch "$1/got"; exit 0' TERM; touch "$1/ready"; while :; do sleep 0.1; done`;
    const run = startShim(kind, { runDir: dir }, sh(`trap : TERM; ${leave}sh -c '${grandchild.replace(/'/g, `'\\''`)}' sh "$1" & until [ -e "$1/got" ]; do sleep 0.1; done; exit 7`, base));
    expect(parseShimReport(await run.report)?.kind).toBe('started');
    await until(() => (existsSync(join(base, 'ready')) ? true : undefined), 10_000, 'the grandchild to start');
    run.child.kill('SIGTERM');
    await run.exited;
    expect(readExitFile(join(dir, 'exit.json'))).toMatchObject({ exitCode: 7, signal: null });
  });

  it('kills the whole tree on SIGUSR1, though it ignores SIGTERM', async (ctx) => {
    skipUnlessBuilt(ctx);
    const { base, dir } = runDir();
    // Ignored signals stay ignored in children: every process of this tree ignores SIGTERM.
    const loop = 'echo $$ >> "$1/pids"; while :; do sleep 0.1; done';
    const members = [`sh -c '${loop}' sh "$1" &`];
    if (kind === 'c' && linux) members.push(`setsid sh -c '${loop}' sh "$1" &`);
    const run = startShim(kind, { runDir: dir }, sh(`trap '' TERM; ${members.join(' ')} ${loop}`, base));
    expect(parseShimReport(await run.report)?.kind).toBe('started');
    await until(() => (existsSync(join(base, 'pids')) && readPids(join(base, 'pids')).length === members.length + 1 ? true : undefined), 10_000, 'the tree to start');
    run.child.kill('SIGUSR1');
    await run.exited;
    expect(readExitFile(join(dir, 'exit.json'))).toMatchObject({ exitCode: null, signal: SIGKILL });
    for (const pid of readPids(join(base, 'pids'))) expect(gone(pid), `pid ${pid}`).toBe(true);
  });

  it('stops and counts what the command left behind, SIGKILL for what ignores SIGTERM', async (ctx) => {
    skipUnlessBuilt(ctx);
    const { base, dir } = runDir();
    const left = ['sleep 1000 &', `(trap '' TERM; exec sleep 1001) &`];
    if (kind === 'c' && linux) left.push('setsid sleep 1002 &', `setsid sh -c "trap '' TERM; exec sleep 1003" &`);
    const script = left.map((background) => `${background} echo $! >> "$1/pids";`).join(' ') + ' exit 3';
    const run = startShim(kind, { runDir: dir, graceMs: 200 }, sh(script, base));
    expect(parseShimReport(await run.report)?.kind).toBe('started');
    await run.exited;
    // The C shim counts each process; the Perl one can only tell that the group outlived the command.
    expect(readExitFile(join(dir, 'exit.json'))).toEqual({ exitCode: 3, signal: null, errno: null, leftovers: kind === 'c' && linux ? 4 : 1 });
    const pids = readPids(join(base, 'pids'));
    expect(pids).toHaveLength(left.length);
    for (const pid of pids) expect(gone(pid), `pid ${pid}`).toBe(true);
  });

  it('rejects a bad command line with exit 2 and "failed 22"', async (ctx) => {
    skipUnlessBuilt(ctx);
    const shim = shimOf(kind);
    const argv = shim.kind === 'c' ? { file: shim.path, args: ['--run-dir'] } : { file: shim.perl!, args: [shim.path, '--run-dir'] };
    const child = spawn(argv.file, argv.args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    started.push(child);
    let report = '';
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (chunk: Buffer) => (report += chunk.toString()));
    const code = await new Promise((resolve) => child.on('exit', resolve));
    expect(code).toBe(ShimExitStatus.usage);
    expect(parseShimReport(report)).toEqual({ kind: 'failed', errno: EINVAL });
  });

  describe('on a full filesystem', () => {
    /** A 1 MB tmpfs for the run directory; the reason it cannot be had, or undefined. */
    function smallFilesystem(): { base: string; mount: string; dir: string } | string {
      const base = tempDir();
      const mount = join(base, 'small');
      mkdirSync(mount);
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mount], { encoding: 'utf8' });
      if (r.error || r.status !== 0) return `cannot mount a tmpfs (needs root): ${(r.error?.message ?? r.stderr).trim()}`;
      mounts.push(mount);
      const dir = join(mount, 'run');
      mkdirSync(dir);
      return { base, mount, dir };
    }

    function needMount(ctx: { skip(): void }): { base: string; mount: string; dir: string } | undefined {
      skipUnlessBuilt(ctx);
      const fs = smallFilesystem();
      if (typeof fs !== 'string') return fs;
      if (process.env.QWEX_REQUIRE_MOUNT === '1') throw new Error(`QWEX_REQUIRE_MOUNT=1 but ${fs}`);
      console.log(`skipped: ${fs}`);
      ctx.skip();
      return undefined;
    }

    /** Fills the filesystem, and checks that not even a byte more fits. */
    function fill(mount: string): string {
      const filler = join(mount, 'filler');
      const fd = openSync(filler, 'w');
      const chunk = Buffer.alloc(64 * 1024, 1);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
      }
      try {
        for (;;) writeSync(fd, chunk, 0, 1);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
      } finally {
        closeSync(fd);
      }
      expect(() => writeFileSync(join(mount, 'probe'), 'x')).toThrow(/ENOSPC/);
      return filler;
    }

    /** A command that waits until the test creates `release`, then exits 5. */
    function waitingCommand(base: string): string[] {
      return sh('until [ -e "$1/release" ]; do sleep 0.05; done; exit 5', base);
    }

    it('writes the exit status to the fallback path when the run directory is full', async (ctx) => {
      const fs = needMount(ctx);
      if (!fs) return;
      const fallback = join(fs.base, 'fallback-exit.json');
      const run = startShim(kind, { runDir: fs.dir, exitFallback: fallback }, waitingCommand(fs.base));
      expect(parseShimReport(await run.report)?.kind).toBe('started');
      fill(fs.mount);
      writeFileSync(join(fs.base, 'release'), '');
      expect(await run.exited).toEqual({ code: 0, signal: null });
      expect(readExitFile(fallback)).toEqual({ exitCode: 5, signal: null, errno: null, leftovers: 0 });
      // Neither an exit.json nor a temporary file is left in the full directory.
      expect(readdirSync(fs.dir)).toEqual(['shim.json']);
    });

    it('without a fallback, writes the status once space is freed, never an empty file', async (ctx) => {
      const fs = needMount(ctx);
      if (!fs) return;
      const run = startShim(kind, { runDir: fs.dir }, waitingCommand(fs.base));
      const report = parseShimReport(await run.report);
      if (report?.kind !== 'started') throw new Error(`not started: ${JSON.stringify(report)}`);
      const filler = fill(fs.mount);
      writeFileSync(join(fs.base, 'release'), '');
      await until(() => (gone(report.pid) ? true : undefined), 10_000, 'the command to end');
      // Bounded: shows that nothing (no torn or empty exit.json) appears while the disk is full, over a retry.
      const until1500 = Date.now() + 1500;
      while (Date.now() < until1500) {
        expect(existsSync(join(fs.dir, 'exit.json'))).toBe(false);
        await sleep(50);
      }
      expect(run.child.exitCode).toBe(null); // still trying
      rmSync(filler);
      expect(await run.exited).toEqual({ code: 0, signal: null });
      expect(readExitFile(join(fs.dir, 'exit.json'))).toEqual({ exitCode: 5, signal: null, errno: null, leftovers: 0 });
      expect(readdirSync(fs.dir).sort()).toEqual(['exit.json', 'shim.json']);
    });

    it('reports "failed 28" and runs nothing when shim.json cannot be written', async (ctx) => {
      const fs = needMount(ctx);
      if (!fs) return;
      fill(fs.mount);
      const run = startShim(kind, { runDir: fs.dir }, sh('touch "$1/ran"', fs.base));
      expect(parseShimReport(await run.report)).toEqual({ kind: 'failed', errno: ENOSPC });
      expect(await run.exited).toEqual({ code: ShimExitStatus.failed, signal: null });
      expect(existsSync(join(fs.base, 'ran'))).toBe(false);
      expect(readdirSync(fs.dir)).toEqual([]);
    });
  });
});

describe('perl shim', () => {
  it('takes the command line of earlier versions, which a qwexd started before an upgrade uses', async () => {
    const { dir } = runDir();
    const shim = shimOf('perl');
    const child = spawn(shim.perl!, [shim.path, join(dir, 'exit.json'), 'sh', '-c', 'exit 9'], { detached: true, stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
    started.push(child);
    let report = '';
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (chunk: Buffer) => (report += chunk.toString()));
    expect(await new Promise((resolve) => child.on('exit', resolve))).toBe(0);
    expect(parseShimReport(report)?.kind).toBe('started');
    expect(readExitFile(join(dir, 'exit.json'))).toEqual({ exitCode: 9, signal: null, errno: null, leftovers: 0 });
  });
});

describe('shim helpers', () => {
  it('finds the kind QWEX_SHIM forces, and none for none', (ctx) => {
    expect(findShim({ ...process.env, QWEX_SHIM: 'none' })).toBeNull();
    expect(findShim({ ...process.env, QWEX_SHIM: 'perl' })).toMatchObject({ kind: 'perl', path: join(ROOT, 'libexec', 'qwex-shim.pl') });
    if (cUnavailable !== undefined) return ctx.skip();
    expect(findShim({ ...process.env, QWEX_SHIM: 'c' })).toEqual({ kind: 'c', path: join(ROOT, 'libexec', 'qwex-shim') });
    expect(findShim({ ...process.env, QWEX_SHIM: undefined })?.kind).toBe('c');
  });

  it('rejects an unknown QWEX_SHIM, and a forced kind that is missing', () => {
    expect(() => findShim({ QWEX_SHIM: 'rust' })).toThrow(QwexError);
    expect(() => findShim({ QWEX_SHIM: 'perl', QWEX_PERL: 'none' })).toThrow(/no perl/);
    expect(findShim({ QWEX_PERL: 'none', QWEX_SHIM: 'none' })).toBeNull();
  });

  it('builds the command line of each kind', () => {
    expect(shimArgs({ kind: 'c', path: '/q/qwex-shim' }, { runDir: '/r', exitFallback: '/t/x.json', graceMs: 500 }, 'python', ['-c', '--'])).toEqual({
      file: '/q/qwex-shim',
      args: ['--run-dir', '/r', '--exit-fallback', '/t/x.json', '--grace-ms', '500', '--', 'python', '-c', '--'],
    });
    expect(shimArgs({ kind: 'perl', path: '/q/qwex-shim.pl', perl: '/usr/bin/perl' }, { runDir: '/r' }, 'true', [])).toEqual({
      file: '/usr/bin/perl',
      args: ['/q/qwex-shim.pl', '--run-dir', '/r', '--', 'true'],
    });
    expect(() => shimArgs({ kind: 'c', path: '/q' }, { runDir: '/r', graceMs: -1 }, 'true', [])).toThrow(QwexError);
  });

  it('parses the fd 3 line', () => {
    expect(parseShimReport('started 123\n')).toEqual({ kind: 'started', pid: 123 });
    expect(parseShimReport('failed 2')).toEqual({ kind: 'failed', errno: 2 });
    expect(parseShimReport('exists\n')).toEqual({ kind: 'exists' });
    expect(parseShimReport('')).toBeUndefined();
    expect(parseShimReport('started')).toBeUndefined();
  });

  it('reads a torn shim.json as starting while it may be written, as nothing once stale and its shim dead', () => {
    const dir = tempDir();
    const path = join(dir, 'shim.json');
    expect(readShimState(dir)).toBeUndefined();
    const past = (Date.now() - 10_000) / 1000;

    writeFileSync(path, '');
    expect(readShimState(dir)).toEqual({ state: 'starting' });
    utimesSync(path, past, past);
    expect(readShimState(dir)).toEqual({ state: 'nothing' });

    // A live shim (this process stands in for it) may still be writing, however old the file.
    writeFileSync(path, `{"shimPid":${process.pid},"shimSta`);
    utimesSync(path, past, past);
    expect(readShimState(dir)).toEqual({ state: 'starting', shimPid: process.pid });

    // A shim that ended: a pid no process has (past the kernel's pid limit).
    writeFileSync(path, '{"shimPid":2147483646,"shimStartTime":"1","pid":');
    utimesSync(path, past, past);
    expect(readShimState(dir)).toEqual({ state: 'nothing', shimPid: 2147483646 });

    writeFileSync(path, '{"shimPid":10,"pid":11,"pgid":11}\n');
    expect(readShimState(dir)).toEqual({ state: 'started', shimPid: 10, pid: 11, pgid: 11 });
  });

  it('reads an exit file, an old one without leftovers, and refuses a damaged one', () => {
    const dir = tempDir();
    const path = join(dir, 'exit.json');
    expect(readExitFile(path)).toBeUndefined();
    writeFileSync(path, '{"exitCode":null,"signal":15,"errno":null,"leftovers":2}\n');
    expect(readExitFile(path)).toEqual({ exitCode: null, signal: 15, errno: null, leftovers: 2 });
    writeFileSync(path, '{"exitCode":0,"signal":null,"errno":null}\n');
    expect(readExitFile(path)).toEqual({ exitCode: 0, signal: null, errno: null, leftovers: 0 });
    writeFileSync(path, '');
    expect(() => readExitFile(path)).toThrow(QwexError);
    writeFileSync(path, '{"exitCode":"0","signal":null,"errno":null}');
    expect(() => readExitFile(path)).toThrow(/not a shim exit status/);
  });
});
