/**
 * Runs keep their true outcome through every crash: a run's whole process
 * tree is stopped on cancel (setsid'd grandchildren too), a recycled
 * process group is never adopted or signalled, a full disk loses no exit
 * status and no record, a broken index is named and rebuilt, and a lost
 * run leaves nothing behind. Real processes, real filesystems (a tmpfs, as
 * root), a real qwexd.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Run } from '../src/run/model.js';
import { isAlive, qwex, qwexJson, requireComponent, sandbox, sleep, until, type Sandbox } from './helpers.js';

let sb: Sandbox;
const mounts: string[] = [];
const strangers: ChildProcess[] = [];
beforeEach(() => {
  sb = sandbox();
});
afterEach(async () => {
  for (const s of strangers.splice(0)) s.kill('SIGKILL');
  // Stop qwexd first (it may hold files there), then unmount, then remove.
  const cleaning = sb.cleanup.bind(sb);
  await stopDaemonOf(sb);
  for (const m of mounts.splice(0)) await execa('umount', ['-l', m], { reject: false });
  await cleaning();
});

/** Stops the sandbox's qwexd, if one runs (SIGKILL: the test is over). */
async function stopDaemonOf(box: Sandbox): Promise<void> {
  try {
    const pid = Number(readFileSync(join(box.runtime, 'qwexd.pid'), 'utf8'));
    if (pid > 0 && isAlive(pid)) process.kill(pid, 'SIGKILL');
  } catch {
    // none runs
  }
}

function runDir(id: string): string {
  return join(sb.project, '.qwex', 'runs', id);
}
function record(id: string): Run {
  return JSON.parse(readFileSync(join(runDir(id), 'run.json'), 'utf8')) as Run;
}
function holder(id: string): number {
  return (JSON.parse(readFileSync(join(runDir(id), 'claim.json'), 'utf8')) as { pid: number }).pid;
}

/** Fills the file system of the working directory to its last page (fill, then fill2 for what a 64 KiB block left). */
const FILL_DISK = 'dd if=/dev/zero of=fill bs=64k 2>/dev/null; dd if=/dev/zero of=fill2 bs=4k 2>/dev/null';

/** Mounts a tmpfs of `size` at `dir` (root only); the reason it cannot, or undefined. */
async function tmpfs(dir: string, size: string): Promise<string | undefined> {
  mkdirSync(dir, { recursive: true });
  const r = await execa('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { reject: false });
  if (r.exitCode !== 0) return `cannot mount a tmpfs (needs root): ${String(r.stderr).trim()}`;
  mounts.push(dir);
  return undefined;
}

describe('a run owns its whole process tree', () => {
  it('cancel stops a command that ignores SIGTERM and every setsid child it started', async () => {
    const pids = join(sb.project, 'pids');
    const script = `trap '' TERM; for i in 1 2 3; do setsid sleep 30$i & echo $! >> ${pids}; done; while :; do sleep 1; done`;
    const id = String((await qwex(sb, ['run', '-d', '--grace', '1s', '--', 'sh', '-c', script])).stdout);
    const children = await until(() => {
      const list = existsSync(pids) ? readFileSync(pids, 'utf8').trim().split('\n').filter(Boolean).map(Number) : [];
      return list.length === 3 ? list : undefined;
    }, 10_000, 'three setsid children');
    expect(children.every(isAlive)).toBe(true);
    const cancelled = await qwexJson<Run[]>(sb, ['cancel', id]);
    expect(cancelled[0]).toMatchObject({ status: 'cancelled', endReason: 'cancel' });
    await until(() => (children.some(isAlive) ? undefined : true), 10_000, 'every setsid child to be gone');
  });

  it('what a command leaves behind when it ends is stopped too, and counted in the record', async () => {
    const pids = join(sb.project, 'left');
    const r = await qwex(sb, ['run', '--', 'sh', '-c', `setsid sleep 300 & echo $! > ${pids}; exit 0`]);
    expect(r.exitCode).toBe(0);
    const left = Number(readFileSync(pids, 'utf8'));
    await until(() => (isAlive(left) ? undefined : true), 10_000, 'the leftover to be stopped');
    const id = readdirSync(join(sb.project, '.qwex', 'runs'))[0]!;
    expect(record(id)).toMatchObject({ status: 'succeeded', leftovers: 1 });
  });
});

describe('the run helper', () => {
  it('qwex doctor says which one parents local runs', async () => {
    const report = await qwexJson<{ setup: { backend: string; label: string; value: string }[] }>(sb, ['doctor']);
    expect(report.setup).toContainEqual({ backend: 'local', label: 'run helper', value: expect.stringMatching(/^compiled \(.*qwex-shim\)$/) });
    const perl = JSON.parse(String((await qwex(sb, ['doctor', '--json'], { env: { QWEX_SHIM: 'perl' } })).stdout)) as typeof report;
    expect(perl.setup.find((s) => s.label === 'run helper')?.value).toMatch(/^Perl fallback/);
  });
});

describe('a recycled process group', () => {
  /** Starts a new group leader with exactly `pid` (root: /proc/sys/kernel/ns_last_pid); undefined if the pid could not be had. */
  async function strangerWithPid(pid: number): Promise<ChildProcess | undefined> {
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
      } catch {
        return undefined;
      }
      const child = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
      if (child.pid === pid) return child;
      child.kill('SIGKILL');
      await sleep(5);
    }
    return undefined;
  }

  it('is never adopted nor signalled: the run is lost, the stranger lives', async (ctx) => {
    const r = await qwex(sb, ['daemon', 'start']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const id = String((await qwex(sb, ['run', '-d', '--', 'sleep', '300'])).stdout);
    const running = await until(() => (record(id).status === 'running' ? record(id) : undefined), 10_000, 'the run to start');
    const pgid = running.backend.pgid as number;
    const daemon = holder(id);
    // qwexd, the shim and the command all die; a stranger then takes the group's id.
    process.kill(daemon, 'SIGKILL');
    process.kill(running.backend.shimPid as number, 'SIGKILL');
    process.kill(-pgid, 'SIGKILL');
    await until(() => (isAlive(daemon) || isAlive(pgid) ? undefined : true), 5000, 'qwexd and the command to die');
    const stranger = await strangerWithPid(pgid);
    requireComponent(ctx, 'QWEX_REQUIRE_MOUNT', stranger ? undefined : 'cannot give a new process a chosen pid (needs root and /proc/sys/kernel/ns_last_pid)');
    strangers.push(stranger!);
    expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
    const lost = await until(() => (record(id).status === 'lost' ? record(id) : undefined), 10_000, 'the run to be recorded lost');
    expect(lost.error?.message).toMatch(/its shim \(pid \d+\) was killed before the command ended/);
    expect((await qwex(sb, ['cancel', id])).exitCode).toBe(10); // already ended: nothing is signalled
    await sleep(300);
    expect(isAlive(stranger!.pid!)).toBe(true);
  });
});

describe('a full disk', () => {
  it('loses no exit status: the run is recorded once space is back, and wait ends then', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_MOUNT', await tmpfs(sb.project, '2m'));
    expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
    // The disk is filled once the run is recorded running (qwexd replacing run.json meanwhile would free a page for the
    // exit file), to its last page.
    const fill = `while ! grep -qE '"status": "running"' "$QWEX_RUN_DIR/run.json"; do sleep 0.05; done; ${FILL_DISK}; exit 42`;
    const id = String((await qwex(sb, ['run', '-d', '--in-place', '--', 'sh', '-c', fill])).stdout);
    const waiting = qwex(sb, ['wait', id]);
    // The command has filled the disk and exited: its status went to the fallback path, the record waits for space.
    await until(() => (existsSync(join(sb.runtime, 'exits', `${id}.json`)) ? true : undefined), 10_000, 'the exit status in the fallback path');
    await sleep(500);
    expect(record(id).status).not.toBe('failed');
    rmSync(join(sb.project, 'fill'));
    const w = await waiting;
    expect(w.exitCode).toBe(42);
    expect(record(id)).toMatchObject({ status: 'failed', exitCode: 42, endReason: 'exit' });
  });

  it('a look at a run whose supervisor died while the disk is full shows the last record; the end is recorded once there is room', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_MOUNT', await tmpfs(sb.project, '2m'));
    expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
    const id = String((await qwex(sb, ['run', '-d', '--in-place', '--', 'sh', '-c', 'while [ ! -e go ]; do sleep 0.1; done; exit 3'])).stdout);
    const running = await until(() => (record(id).status === 'running' ? record(id) : undefined), 10_000, 'the run to start');
    // qwexd dies; the command ends while nobody supervises it; then the disk fills.
    process.kill(holder(id), 'SIGKILL');
    writeFileSync(join(sb.project, 'go'), '');
    await until(() => (isAlive(running.backend.shimPid as number) ? undefined : true), 10_000, 'the command and its shim to end');
    await execa('sh', ['-c', FILL_DISK], { cwd: sb.project, reject: false });
    // Looking at it, with or without qwexd, cannot take the run over (no room for the claim): the look still answers.
    const direct = await qwex(sb, ['status', id, '--json'], { env: { QWEX_NO_DAEMON: '1' } });
    expect(direct.exitCode, String(direct.stderr)).toBe(0);
    expect(JSON.parse(String(direct.stdout))).toMatchObject({ id, status: 'running' });
    expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
    const viaDaemon = await qwex(sb, ['status', id, '--json']);
    expect(viaDaemon.exitCode, String(viaDaemon.stderr)).toBe(0);
    expect(JSON.parse(String(viaDaemon.stdout))).toMatchObject({ id, status: 'running' });
    rmSync(join(sb.project, 'fill'));
    const w = await qwex(sb, ['wait', id]);
    expect(w.exitCode, String(w.stderr)).toBe(3);
    expect(record(id)).toMatchObject({ status: 'failed', exitCode: 3 });
  });

  it('a full state directory is reported with its code, not as an internal error', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_MOUNT', await tmpfs(sb.state, '1m'));
    writeFileSync(join(sb.project, 'data.bin'), Buffer.alloc(2 * 1024 * 1024, 1)); // the snapshot does not fit
    const r = await qwex(sb, ['run', '-d', '--', 'true'], { env: { QWEX_NO_DAEMON: '1' } });
    expect(r.exitCode, String(r.stderr)).toBe(6);
    expect(String(r.stderr)).toMatch(/no space left on device|free some disk space/i);
  });
});

describe('the index and the records', () => {
  it('a corrupt index is named, and doctor --reindex moves it aside and rebuilds it', async () => {
    const id = String((await qwex(sb, ['run', '-d', '--', 'true'])).stdout);
    await qwex(sb, ['wait', id]);
    writeFileSync(join(sb.state, 'index.db'), 'this is not a database, it was overwritten by mistake\n'.repeat(200));
    for (const suffix of ['-wal', '-shm']) rmSync(join(sb.state, `index.db${suffix}`), { force: true });
    const ps = await qwex(sb, ['ps']);
    expect(ps.exitCode).toBe(8);
    expect(String(ps.stderr)).toContain(join(sb.state, 'index.db'));
    const doctor = await qwex(sb, ['doctor', '--reindex', '--json']);
    expect(doctor.exitCode, String(doctor.stderr)).toBe(0);
    expect(JSON.parse(String(doctor.stdout)).reindex.movedAside).toMatch(/index\.db\.broken-/);
    expect((await qwexJson<{ id: string }[]>(sb, ['ps'])).map((r) => r.id)).toEqual([id]);
  });

  it('a 0-byte index is not taken for an empty one', async () => {
    const id = String((await qwex(sb, ['run', '-d', '--', 'true'])).stdout);
    await qwex(sb, ['wait', id]);
    writeFileSync(join(sb.state, 'index.db'), '');
    for (const suffix of ['-wal', '-shm']) rmSync(join(sb.state, `index.db${suffix}`), { force: true });
    const ps = await qwex(sb, ['ps']);
    expect(ps.exitCode).toBe(8);
    expect(String(ps.stderr)).toMatch(/is empty \(0 bytes\)/);
    expect((await qwex(sb, ['doctor', '--reindex'])).exitCode).toBe(0);
    expect((await qwexJson<{ id: string }[]>(sb, ['ps'])).map((r) => r.id)).toEqual([id]);
  });
});

describe('a lost run', () => {
  it('leaves no copy of the workspace behind', async () => {
    writeFileSync(join(sb.project, 'train.sh'), 'sleep 300\n');
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', 'train.sh'])).stdout);
    const running = await until(() => (record(id).status === 'running' ? record(id) : undefined), 10_000, 'the run to start');
    expect(existsSync(join(runDir(id), 'workspace', 'train.sh'))).toBe(true);
    process.kill(holder(id), 'SIGKILL');
    process.kill(running.backend.shimPid as number, 'SIGKILL');
    process.kill(-(running.backend.pgid as number), 'SIGKILL');
    const w = await qwex(sb, ['wait', id]);
    expect(w.exitCode).toBe(125);
    expect(record(id).status).toBe('lost');
    // What served the run goes right after its final record is written (by whoever wrote it).
    await until(() => (existsSync(join(runDir(id), 'workspace')) ? undefined : true), 5000, 'the workspace copy to be removed');
    expect(existsSync(join(runDir(id), 'env.json'))).toBe(false);
  });
});
