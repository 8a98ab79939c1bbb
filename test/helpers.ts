import { mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';

export const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const CLI = join(ROOT, 'dist', 'client', 'cli.js');
export const FIXTURES = join(ROOT, 'test', 'fixtures');

/** A fresh project directory and state directory, removed by `cleanup`. */
export interface Sandbox {
  project: string;
  state: string;
  /** QWEX_RUNTIME_DIR: where this sandbox's qwexd puts its socket. */
  runtime: string;
  socket: string;
  env: Record<string, string>;
  /** Stops this sandbox's qwexd if one runs (SIGTERM, then SIGKILL), and removes everything. */
  cleanup(): Promise<void>;
}

export function sandbox(): Sandbox {
  const base = realpathSync(mkdtempSync(join(tmpdir(), 'qwex-test-')));
  const project = join(base, 'project');
  const state = join(base, 'state');
  const runtime = join(base, 'run');
  mkdirSync(project, { recursive: true });
  return {
    project,
    state,
    runtime,
    socket: join(runtime, 'qwexd.sock'),
    // QWEX_FATAL_ERRORS: a qwexd started here exits 70 on an unhandled error instead of logging it and serving on.
    env: { QWEX_STATE_DIR: state, QWEX_RUNTIME_DIR: runtime, NO_COLOR: '1', QWEX_FATAL_ERRORS: '1' },
    cleanup: async () => {
      let pid = 0;
      try {
        pid = Number(readFileSync(join(runtime, 'qwexd.pid'), 'utf8'));
      } catch {
        // none running
      }
      if (pid > 0 && isAlive(pid)) {
        process.kill(pid, 'SIGTERM');
        const deadline = Date.now() + 5000;
        while (isAlive(pid) && Date.now() < deadline) await sleep(25);
        if (isAlive(pid)) process.kill(pid, 'SIGKILL');
      }
      // A run's supervisor (a monitor) may still be at work as the test ends: it is stopped, then the rest removed.
      killProcessesUnder(base);
      // QWEX_TEST_KEEP=1 leaves the sandbox (records, logs, qwexd.log) for a look after a failure.
      if (process.env.QWEX_TEST_KEEP === '1') return void console.log(`kept ${base}`);
      rmSync(base, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    },
  };
}

/** SIGKILLs every process whose command line names a path under `base` (a sandbox's monitors and shims). */
function killProcessesUnder(base: string): void {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n) && Number(n) !== process.pid);
  } catch {
    return; // no /proc here: the retried removal below has to do
  }
  for (const pid of pids) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(base)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone meanwhile, or not ours
    }
  }
}

export interface QwexResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs the real, built `qwex` CLI in the sandbox's project. */
export function qwex(sb: Sandbox, args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): ResultPromise<{ reject: false; cwd: string; env: Record<string, string> }> {
  return execa(process.execPath, [CLI, ...args], {
    cwd: options.cwd ?? sb.project,
    env: { ...sb.env, ...options.env },
    reject: false,
  }) as ResultPromise<{ reject: false; cwd: string; env: Record<string, string> }>;
}

export async function qwexJson<T>(sb: Sandbox, args: string[], options: { cwd?: string } = {}): Promise<T> {
  const result = await qwex(sb, [...args, '--json'], options);
  if (result.exitCode !== 0) throw new Error(`qwex ${args.join(' ')} exited ${result.exitCode}: ${result.stderr}`);
  return JSON.parse(String(result.stdout)) as T;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls `check` until it returns a value other than undefined, or fails after
 * `timeoutMs`. A check that throws counts as "not yet" (a file being created
 * between two looks), and its last error is reported on time-out.
 */
export async function until<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`);
    }
    await sleep(25);
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export const DOCKER_TEST_IMAGE = 'qwex-test/busybox:latest';

/**
 * Why Docker tests cannot run here (no engine, or no test image), or
 * undefined when they can. scripts/provision-docker.sh provides both.
 */
export async function dockerUnavailable(): Promise<string | undefined> {
  const r = await execa('docker', ['image', 'inspect', '--format', '{{.Id}}', DOCKER_TEST_IMAGE], { reject: false, timeout: 20_000 });
  if (r.exitCode === 0) return undefined;
  const detail = String(r.stderr || r.stdout || (r as { shortMessage?: string }).shortMessage || '').trim().split('\n')[0];
  return `no Docker engine with ${DOCKER_TEST_IMAGE} (${detail}); run scripts/provision-docker.sh as root`;
}

/**
 * Skips the test with a printed reason when a real component is missing,
 * unless the matching QWEX_REQUIRE_* is 1 (as in CI): then it fails.
 */
export function requireComponent(ctx: { skip(): void }, variable: string, reason: string | undefined): void {
  if (reason === undefined) return;
  if (process.env[variable] === '1') throw new Error(`${variable}=1 but ${reason}`);
  console.log(`skipped: ${reason}`);
  ctx.skip();
}
