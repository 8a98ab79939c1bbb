/**
 * A real install, as a user would make one: `npm pack`, then
 * `npm install -g ./qwex-<version>.tgz` into a temporary prefix (the
 * dependencies come from the npm registry; better-sqlite3 and the run
 * helper are compiled by the install). The installed `qwex`, `qwexd` and
 * `qwexcloud` then work from there, find their helper programs in the
 * installed package, and `qwex daemon install` points its unit at them.
 * Skipped with the reason where the registry cannot be reached; fails
 * instead under QWEX_REQUIRE_REGISTRY=1 (CI).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, requireComponent, until } from './helpers.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** npm compiles better-sqlite3 from source here: minutes, not seconds. */
const INSTALL_TIMEOUT_MS = 15 * 60_000;

let reason: string | undefined;
let base: string;
let prefix: string;
let installed: string;
let env: Record<string, string>;

async function registryUnreachable(): Promise<string | undefined> {
  const r = await execa('npm', ['ping'], { reject: false, timeout: 30_000 });
  return r.exitCode === 0 ? undefined : `the npm registry cannot be reached for the package's dependencies (npm ping: ${String(r.stderr).trim().split('\n').at(-1)})`;
}

beforeAll(async () => {
  reason = await registryUnreachable();
  if (reason !== undefined) return;
  base = realpathSync(mkdtempSync(join(tmpdir(), 'qwex-install-')));
  prefix = join(base, 'prefix');
  // The built package as it would be published (files: in package.json); the build already ran (npm test builds first).
  const packed = await execa('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', base], { cwd: ROOT });
  const tarball = join(base, (JSON.parse(String(packed.stdout)) as { filename: string }[])[0]!.filename);
  await execa('npm', ['install', '-g', tarball, '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline'], { timeout: INSTALL_TIMEOUT_MS, env: { ...process.env, CI: '' } });
  installed = join(prefix, 'lib', 'node_modules', 'qwex');
  mkdirSync(join(base, 'project'));
  env = {
    ...(process.env as Record<string, string>),
    PATH: `${join(prefix, 'bin')}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    QWEX_STATE_DIR: join(base, 'state'),
    QWEX_RUNTIME_DIR: join(base, 'run'),
    XDG_CONFIG_HOME: join(base, 'config'),
    NO_COLOR: '1',
  };
}, INSTALL_TIMEOUT_MS + 60_000);

afterAll(async () => {
  if (!base) return;
  await execa(join(prefix, 'bin', 'qwex'), ['daemon', 'stop'], { env, reject: false });
  rmSync(base, { recursive: true, force: true });
});

const run = (command: string, args: string[]): ReturnType<typeof execa> => execa(join(prefix, 'bin', command), args, { cwd: join(base, 'project'), env, reject: false });

describe('npm pack, then npm install -g into a prefix', () => {
  it('gives qwex, qwexd and qwexcloud commands of this version, and the package carries what they need', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_REGISTRY', reason);
    for (const command of ['qwex', 'qwexd', 'qwexcloud']) {
      const r = await run(command, ['--version']);
      expect(r.exitCode, `${command}: ${String(r.stderr)}`).toBe(0);
      expect(String(r.stdout).trim()).toBe(VERSION);
    }
    // The install compiled the run helper (postinstall) and the native index module.
    expect(statSync(join(installed, 'libexec', 'qwex-shim')).mode & 0o111).not.toBe(0);
    expect(readdirSync(join(installed, 'node_modules', 'better-sqlite3', 'build', 'Release')).some((f) => f.endsWith('.node'))).toBe(true);
    // Only what a user needs: no sources, tests or the checkout's own build leftovers.
    expect(readdirSync(installed).sort()).toEqual(['README.md', 'dist', 'launchd', 'libexec', 'node_modules', 'package.json', 'scripts', 'systemd']);
  });

  it('runs a command from the installed package, with its compiled helper as the run\'s parent', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_REGISTRY', reason);
    writeFileSync(join(base, 'project', 'hello.sh'), 'echo "hello from $(basename "$PWD")"; mkdir -p out; echo 1 > out/result.txt\n');
    const r = await run('qwex', ['run', '--', 'sh', 'hello.sh']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('hello from project');
    const doctor = JSON.parse(String((await run('qwex', ['doctor', '--json'])).stdout)) as { setup: { label: string; value: string }[] };
    expect(doctor.setup).toContainEqual(expect.objectContaining({ label: 'run helper', value: `compiled (${join(installed, 'libexec', 'qwex-shim')})` }));
    const [listed] = JSON.parse(String((await run('qwex', ['ps', '--json'])).stdout)) as { id: string }[];
    const artifacts = JSON.parse(String((await run('qwex', ['artifacts', '--json', listed!.id])).stdout)) as { files: { path: string }[] };
    expect(artifacts.files.map((f) => f.path)).toEqual(['out/result.txt']);
  });

  it('qwex daemon start runs the installed qwexd, and daemon install --no-enable writes a unit that points at it', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_REGISTRY', reason);
    const started = await run('qwex', ['daemon', 'start']);
    expect(started.exitCode, String(started.stderr)).toBe(0);
    const pidFile = join(base, 'run', 'qwexd.pid');
    const pid = await until(() => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : undefined), 20_000, 'qwexd\'s pid file');
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline).toContain(join(installed, 'dist', 'daemon', 'qwexd.js'));
    expect((await run('qwex', ['daemon', 'stop'])).exitCode).toBe(0);

    const unit = JSON.parse(String((await run('qwex', ['daemon', 'install', '--no-enable', '--platform', 'linux', '--json'])).stdout)) as { path: string };
    expect(unit.path).toBe(join(base, 'config', 'systemd', 'user', 'qwexd.service'));
    expect(readFileSync(unit.path, 'utf8')).toContain(`ExecStart="${process.execPath}" "${join(installed, 'dist', 'daemon', 'qwexd.js')}" "--foreground"`);
  });

  it('qwexcloud serves from the installed package: a token made with it is honoured over HTTP', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_REGISTRY', reason);
    const data = join(base, 'cloud');
    const token = String((await run('qwexcloud', ['token', 'create', '--user', 'alice', '--data', data])).stdout).trim();
    expect(token).toMatch(/^qwx_/);
    const server = execa(join(prefix, 'bin', 'qwexcloud'), ['serve', '--data', data, '--listen', '127.0.0.1:0', '--target', 'local'], { env, reject: false });
    let output = '';
    server.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    server.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    try {
      const url = await until(() => /(http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1], 30_000, 'qwexcloud to listen');
      const me = await fetch(`${url}/v1/me`, { headers: { authorization: `Bearer ${token}` } });
      expect(me.status).toBe(200);
      expect(await me.json()).toMatchObject({ user: 'alice' });
    } finally {
      server.kill('SIGTERM');
      await server;
    }
  });
});
