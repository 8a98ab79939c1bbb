/**
 * What only the SSH backend does, against a real OpenSSH server on
 * 127.0.0.1 (test/sshd.ts): the workspace sync and its exclusions, the
 * incremental second sync, a connection cut mid-run, host-key checks, and
 * the errors. Skipped with a printed reason where sshd cannot be had;
 * QWEX_REQUIRE_SSHD=1 (CI) makes that a failure.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SshBackend } from '../src/backends/ssh/backend.js';
import type { RunIO } from '../src/backends/types.js';
import type { Job, Run } from '../src/run/model.js';
import { ContentStore, snapshotWorkspace } from '../src/workspace/snapshot.js';
import { qwex, requireComponent, sandbox, until, type Sandbox } from './helpers.js';
import { sshdUnavailable, startSshd, type TestSshd } from './sshd.js';

let reason: string | undefined;
let base: string;
let sshd: TestSshd;
let sb: Sandbox;
const remoteRoot = (): string => join(base, 'remote');

beforeAll(async () => {
  reason = await sshdUnavailable();
  if (reason !== undefined) return;
  base = mkdtempSync(join(tmpdir(), 'qwex-ssh-'));
  sshd = await startSshd(base);
});
afterAll(async () => {
  await sshd?.stop();
  if (base) rmSync(base, { recursive: true, force: true });
});
beforeEach((ctx) => {
  requireComponent(ctx, 'QWEX_REQUIRE_SSHD', reason);
  sb = sandbox();
  sb.env.HOME = sshd.home;
  writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    host: ${sshd.alias}\n    root: ${remoteRoot()}\n`);
});
afterEach(async () => {
  if (sb) await sb.cleanup();
});

const SSH = ['--backend', 'ssh'];

function runs(): Run[] {
  const dir = join(sb.project, '.qwex', 'runs');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).sort().map((id) => JSON.parse(readFileSync(join(dir, id, 'run.json'), 'utf8')) as Run);
}

describe('ssh backend: workspace sync', () => {
  it('sends the project without .git, .gitignore\'d and .qwexignore\'d files, then only what changed', async () => {
    mkdirSync(join(sb.project, '.git'));
    writeFileSync(join(sb.project, '.git', 'HEAD'), 'ref: refs/heads/main\n');
    writeFileSync(join(sb.project, '.gitignore'), 'data/\n*.ckpt\n');
    writeFileSync(join(sb.project, '.qwexignore'), 'notes.txt\n');
    mkdirSync(join(sb.project, 'data'));
    writeFileSync(join(sb.project, 'data', 'big.bin'), 'x'.repeat(1000));
    writeFileSync(join(sb.project, 'model.ckpt'), 'weights');
    writeFileSync(join(sb.project, 'notes.txt'), 'private');
    mkdirSync(join(sb.project, 'src'));
    for (let i = 0; i < 50; i++) writeFileSync(join(sb.project, 'src', `m${i}.py`), `# module ${i}\n`);
    writeFileSync(join(sb.project, 'train.sh'), 'find . -type f | sort\n');
    const first = await qwex(sb, ['run', '-q', ...SSH, '--', 'sh', 'train.sh']);
    expect(first.exitCode, String(first.stderr)).toBe(0);
    const seen = String(first.stdout).split('\n');
    expect(seen).toContain('./train.sh');
    expect(seen).toContain('./src/m49.py');
    expect(seen).toContain('./.gitignore');
    for (const absent of ['./.git/HEAD', './data/big.bin', './model.ckpt', './notes.txt']) expect(seen).not.toContain(absent);
    // 50 modules, train.sh, qwex.yaml, .gitignore, .qwexignore
    expect(runs()[0]!.backend.sync).toEqual({ files: 54, bytes: expect.any(Number), removed: 0 });

    const second = await qwex(sb, ['run', '-q', ...SSH, '--', 'sh', 'train.sh']);
    expect(second.exitCode).toBe(0);
    expect(runs()[1]!.backend.sync).toEqual({ files: 0, bytes: 0, removed: 0 });

    writeFileSync(join(sb.project, 'src', 'm1.py'), '# changed\n');
    rmSync(join(sb.project, 'src', 'm2.py'));
    const third = await qwex(sb, ['run', '-q', ...SSH, '--', 'sh', '-c', 'cat src/m1.py; ls src | wc -l']);
    expect(String(third.stdout)).toBe('# changed\n49');
    expect(runs()[2]!.backend.sync).toEqual({ files: 1, bytes: 10, removed: 1 });
  });

  it('a workspace over workspace_max_mb fails before anything is sent, naming the biggest directory', async () => {
    writeFileSync(join(sb.project, 'qwex.yaml'), `workspace_max_mb: 1\nbackends:\n  ssh:\n    host: ${sshd.alias}\n    root: ${remoteRoot()}\n`);
    mkdirSync(join(sb.project, 'weights'));
    writeFileSync(join(sb.project, 'weights', 'w.bin'), Buffer.alloc(2_000_000, 1));
    const r = await qwex(sb, ['run', ...SSH, '--', 'true']);
    expect(r.exitCode).not.toBe(0);
    expect(String(r.stderr)).toMatch(/weights/);
    expect(runs()).toEqual([]);
  });
});

describe('ssh backend: the connection', () => {
  it('a connection cut mid-run: logs resume with nothing lost or doubled, and the record is right', async () => {
    const id = String((await qwex(sb, ['run', '-d', ...SSH, '--', 'sh', '-c', 'for i in $(seq 1 12); do echo line $i; echo err $i >&2; sleep 0.25; done; exit 5'])).stdout).trim();
    const stdout = join(sb.project, '.qwex', 'runs', id, 'stdout.log');
    await until(() => (existsSync(stdout) && readFileSync(stdout, 'utf8').includes('line 3') ? true : undefined), 20_000, 'output to arrive');
    expect(await sshd.cutSessions()).toBe(1);
    const w = await qwex(sb, ['wait', id]);
    expect(w.exitCode).toBe(5);
    expect(readFileSync(stdout, 'utf8')).toBe(`${Array.from({ length: 12 }, (_, i) => `line ${i + 1}`).join('\n')}\n`);
    expect(readFileSync(join(sb.project, '.qwex', 'runs', id, 'stderr.log'), 'utf8')).toBe(`${Array.from({ length: 12 }, (_, i) => `err ${i + 1}`).join('\n')}\n`);
    expect(runs()[0]).toMatchObject({ status: 'failed', exitCode: 5 });
  });

  it('refuses a host whose key changed, and one whose key is unknown, saying how to accept it', async () => {
    const knownHosts = join(sshd.home, '.ssh', 'known_hosts');
    const original = readFileSync(knownHosts, 'utf8');
    try {
      const other = join(base, `other-${Date.now()}`);
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
      const otherKey = readFileSync(`${other}.pub`, 'utf8').split(' ').slice(0, 2).join(' ');
      writeFileSync(knownHosts, `[127.0.0.1]:${sshd.port} ${otherKey}\n`);
      const changed = await qwex(sb, ['run', ...SSH, '--', 'true']);
      expect(changed.exitCode).toBe(1);
      expect(runs()[0]!.error?.message).toMatch(/host key of qwex-test has CHANGED/);
      expect(String(changed.stderr)).toMatch(/CHANGED/);

      writeFileSync(knownHosts, '');
      await qwex(sb, ['run', ...SSH, '--', 'true']);
      expect(runs()[1]!.error?.message).toMatch(/is not in .*known_hosts: refusing to connect to an unknown host/);
    } finally {
      writeFileSync(knownHosts, original);
    }
  });
});

describe('ssh backend: errors', () => {
  it('an unreachable host names the host and port', async () => {
    writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    host: nowhere\n    root: ${remoteRoot()}\n    hosts:\n      nowhere: { hostname: 127.0.0.1, port: 1 }\n`);
    const r = await qwex(sb, ['run', ...SSH, '--', 'true']);
    expect(r.exitCode).toBe(1);
    expect(runs()[0]!.error).toMatchObject({ code: 'QWEX_BACKEND_UNAVAILABLE', message: expect.stringMatching(/cannot reach nowhere \(127\.0\.0\.1\) port 1: ECONNREFUSED/) });
  });

  it('failed authentication says which methods were tried', async () => {
    const wrong = join(base, `wrong-${Date.now()}`);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', wrong]);
    writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    host: badkey\n    root: ${remoteRoot()}\n    hosts:\n      badkey: { hostname: 127.0.0.1, port: ${sshd.port}, user: ${sshd.user}, identity_file: ${wrong} }\n`);
    // The known_hosts entry is for 127.0.0.1 at this port, so the host key is accepted; the client key is not.
    const r = await qwex(sb, ['run', ...SSH, '--', 'true'], { env: { SSH_AUTH_SOCK: '' } });
    expect(r.exitCode).toBe(1);
    expect(runs()[0]!.error?.message).toBe(`authentication to ${sshd.user}@badkey failed (tried: key ${wrong})`);
  });

  it('a remote without tar is refused before anything is sent, saying what is missing', async () => {
    // A second server whose sessions find nothing on PATH: the shell's builtins work, tar does not.
    const other = mkdtempSync(join(tmpdir(), 'qwex-sshd-notar-'));
    const bare = await startSshd(other, ['ForceCommand env PATH=/nonexistent /bin/sh -c "$SSH_ORIGINAL_COMMAND"']);
    try {
      sb.env.HOME = bare.home;
      writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    host: ${bare.alias}\n    root: ${join(other, 'remote')}\n`);
      const r = await qwex(sb, ['run', ...SSH, '--', 'true']);
      expect(r.exitCode).toBe(1);
      expect(runs()[0]!.error).toMatchObject({ code: 'QWEX_BACKEND_UNAVAILABLE', message: `${bare.alias} has no tar: qwex needs a POSIX shell and tar there` });
    } finally {
      await bare.stop();
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('a full remote disk fails the run saying so', async (ctx) => {
    const full = join(base, `full-${Date.now()}`);
    mkdirSync(full);
    const mount = await execa('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', full], { reject: false });
    if (mount.exitCode !== 0) {
      const why = `cannot mount a small tmpfs as the remote root (${String(mount.stderr).trim() || 'mount failed'}); needs root`;
      if (process.env.QWEX_REQUIRE_MOUNT === '1') throw new Error(`QWEX_REQUIRE_MOUNT=1 but ${why}`);
      console.log(`skipped: ${why}`);
      return ctx.skip();
    }
    try {
      writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    host: ${sshd.alias}\n    root: ${full}\n`);
      writeFileSync(join(sb.project, 'weights.bin'), Buffer.alloc(512 * 1024, 7));
      const r = await qwex(sb, ['run', ...SSH, '--', 'true']);
      expect(r.exitCode).toBe(1);
      expect(runs()[0]!.error?.message).toMatch(/the remote disk is full \(tar: .*(No space left on device|Wrote only \d+ of \d+ bytes)/i);
    } finally {
      await execa('umount', [full], { reject: false });
    }
  });

  it('no host is a usage error before anything is recorded; --host needs the ssh backend', async () => {
    writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    root: ${remoteRoot()}\n`);
    const r = await qwex(sb, ['run', ...SSH, '--', 'true']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toMatch(/no host given for an ssh run/);
    const wrongBackend = await qwex(sb, ['run', '--host', 'x', '--', 'true']);
    expect(wrongBackend.exitCode).toBe(2);
    expect(runs()).toEqual([]);
  });
});

describe('ssh backend: starting exactly once, and a cancel while it starts', () => {
  it('a second start of the same run (its first supervisor died right after starting) adopts the command: it runs once, and nothing is sent again', async () => {
    // The backend is driven directly, as the runner drives it; it reads ~/.ssh and the content store from the environment.
    const saved = { HOME: process.env.HOME, QWEX_STATE_DIR: process.env.QWEX_STATE_DIR };
    process.env.HOME = sshd.home;
    process.env.QWEX_STATE_DIR = sb.state;
    try {
      writeFileSync(join(sb.project, 'step.sh'), 'echo ran >> "$QWEX_RUN_DIR/ran.txt"; echo out; sleep 1; exit 3\n');
      const manifest = await snapshotWorkspace(sb.project, new ContentStore());
      const runId = randomUUID();
      const dir = join(sb.project, '.qwex', 'runs', runId);
      mkdirSync(dir, { recursive: true });
      const job: Job = {
        command: ['sh', 'step.sh'],
        shell: false,
        cwd: sb.project,
        env: {},
        backend: 'ssh',
        backendOptions: { host: sshd.alias, root: remoteRoot() },
        artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 100 },
        killGraceMs: 5000,
        workspace: { mode: 'snapshot', manifest: manifest.id, cwd: '' },
      };
      const io: RunIO = { dir, runId, project: sb.project, root: sb.project, stdoutPath: join(dir, 'stdout.log'), stderrPath: join(dir, 'stderr.log'), env: {}, signal: new AbortController().signal };
      const backend = new SshBackend();
      const first = await backend.start(job, io);
      expect(first.details.sync).toMatchObject({ files: expect.any(Number) });
      first.dispose(); // the first supervisor is gone; the command runs on
      const second = await backend.start(job, io);
      expect(second.details).toMatchObject({ remoteDir: first.details.remoteDir, remotePgid: first.details.remotePgid });
      expect(second.details.sync).toBeUndefined();
      expect(await second.exited).toMatchObject({ exitCode: 3 });
      expect(readFileSync(join(remoteRoot(), 'runs', runId, 'ran.txt'), 'utf8')).toBe('ran\n');
      expect(readFileSync(io.stdoutPath, 'utf8')).toBe('out\n');
      await second.release();
    } finally {
      Object.assign(process.env, saved);
    }
  });

  it('cancel during a workspace sync that does not finish returns once the run is recorded cancelled, and leaves no lock and no run directory', async () => {
    // A second server whose tar takes a minute to unpack anything: the sync hangs in it.
    const other = mkdtempSync(join(tmpdir(), 'qwex-sshd-slow-'));
    const bin = join(other, 'slowbin');
    const pids = join(other, 'tar-pids');
    mkdirSync(bin);
    const realTar = execFileSync('sh', ['-c', 'command -v tar']).toString().trim();
    writeFileSync(join(bin, 'tar'), `#!/bin/sh\ncase "$1" in -xf) echo $$ >> ${pids}; sleep 60 ;; esac\nexec ${realTar} "$@"\n`, { mode: 0o755 });
    const slow = await startSshd(other, [`ForceCommand env PATH=${bin}:/usr/bin:/bin /bin/sh -c "$SSH_ORIGINAL_COMMAND"`]);
    try {
      sb.env.HOME = slow.home;
      const remote = join(other, 'remote');
      writeFileSync(join(sb.project, 'qwex.yaml'), `backends:\n  ssh:\n    host: ${slow.alias}\n    root: ${remote}\n`);
      const r = await qwex(sb, ['run', '-d', ...SSH, '--', 'true']);
      expect(r.exitCode, String(r.stderr)).toBe(0);
      const id = String(r.stdout).trim();
      await until(() => (existsSync(pids) ? true : undefined), 30_000, 'the workspace sync to reach the remote tar');
      expect(runs()[0]!.status).toBe('pending');
      const c = await qwex(sb, ['cancel', id]);
      expect(c.exitCode, String(c.stderr)).toBe(0);
      expect(runs()[0]).toMatchObject({ id, status: 'cancelled', endReason: 'cancel' });
      expect(existsSync(join(remote, 'runs', id))).toBe(false);
      expect(readdirSync(join(remote, 'cache')).filter((n) => n.endsWith('.lock'))).toEqual([]);
    } finally {
      for (const pid of existsSync(pids) ? readFileSync(pids, 'utf8').split('\n').filter(Boolean) : []) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {}
      }
      await slow.stop();
      rmSync(other, { recursive: true, force: true });
    }
  }, 90_000);
});
