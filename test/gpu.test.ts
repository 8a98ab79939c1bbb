/**
 * qwexd's GPU ledger, driving the real qwexd and real runs. The GPUs are
 * the one thing faked: no NVIDIA GPU can be had here, so discovery goes
 * through test/fixtures/fake-nvidia-smi (named as a fake), which prints a
 * given inventory in nvidia-smi's format. Each run holds its GPUs by
 * creating a lock file per UUID in CUDA_VISIBLE_DEVICES exclusively: two
 * runs handed the same GPU at once would make one of them fail.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ListedRun } from '../src/protocol.js';
import type { Run } from '../src/run/model.js';
import { FIXTURES, dockerUnavailable, isAlive, qwex, qwexJson, requireComponent, sandbox, sleep, until, type Sandbox } from './helpers.js';

const FAKE = join(FIXTURES, 'fake-nvidia-smi');
const node = process.execPath;

interface FakeGpu {
  uuid: string;
  usedMb?: number;
  utilization?: number;
}

/** What a holding run saw, as it wrote it. */
interface Seen {
  CUDA_VISIBLE_DEVICES: string | null;
  QWEX_GPUS: string | null;
  pid: number;
}

/** A job that takes its GPUs' locks, says what it saw, and holds them until its gate (or the gate `all`) opens. */
const HOLD = `
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
const [locks, gates, out] = process.argv.slice(2);
const id = process.env.QWEX_RUN_ID;
const uuids = (process.env.CUDA_VISIBLE_DEVICES ?? '').split(',').filter(Boolean);
for (const uuid of uuids) writeFileSync(join(locks, uuid), id, { flag: 'wx' });
writeFileSync(join(out, id + '.json'), JSON.stringify({ CUDA_VISIBLE_DEVICES: process.env.CUDA_VISIBLE_DEVICES ?? null, QWEX_GPUS: process.env.QWEX_GPUS ?? null, pid: process.pid }));
while (!existsSync(join(gates, id)) && !existsSync(join(gates, 'all'))) await new Promise((r) => setTimeout(r, 20));
for (const uuid of uuids) rmSync(join(locks, uuid));
`;

let sb: Sandbox;
let fake: string;
let locks: string;
let gates: string;
let out: string;
let hold: string;

beforeEach(() => {
  sb = sandbox();
  const base = join(sb.project, '..');
  fake = join(base, 'fake-gpus');
  locks = join(base, 'locks');
  gates = join(base, 'gates');
  out = join(base, 'seen');
  for (const dir of [fake, locks, gates, out]) mkdirSync(dir);
  hold = join(base, 'hold.mjs');
  writeFileSync(hold, HOLD);
  Object.assign(sb.env, {
    FAKE_NVIDIA_SMI_DIR: fake,
    QWEX_GPU_DISCOVERY: FAKE,
    QWEX_GPU_PROCESSES: `${FAKE} --query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits`,
    QWEX_GPU_SAMPLE_MS: '200',
  });
});
afterEach(() => sb.cleanup());

function setGpus(gpus: FakeGpu[]): void {
  const text = gpus.map((g, i) => `${i}, ${g.uuid}, NVIDIA H100 80GB HBM3, 81559, ${g.usedMb ?? 0}, ${g.utilization ?? 0}\n`).join('');
  writeFileSync(join(fake, 'gpus.tmp'), text);
  renameSync(join(fake, 'gpus.tmp'), join(fake, 'gpus.csv'));
}

function gpus(n: number): FakeGpu[] {
  return Array.from({ length: n }, (_, i) => ({ uuid: `GPU-${String(i).repeat(8)}-fake-${i}` }));
}

async function startDaemon(concurrency = 8): Promise<number> {
  const r = await qwex(sb, ['daemon', 'start', '--concurrency', String(concurrency)]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return Number(readFileSync(join(sb.runtime, 'qwexd.pid'), 'utf8'));
}

async function submitHold(gpuRequest: string, extra: string[] = []): Promise<string> {
  const r = await qwex(sb, ['run', '-d', '--gpus', gpuRequest, ...extra, '--', node, hold, locks, gates, out]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).trim();
}

function record(id: string): Run {
  return JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as Run;
}

function seen(id: string): Seen | undefined {
  const path = join(out, `${id}.json`);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Seen) : undefined;
}

function open(gate: string): void {
  writeFileSync(join(gates, gate), '');
}

async function listed(id: string): Promise<ListedRun> {
  const rows = await qwexJson<ListedRun[]>(sb, ['ps', '-n', '0']);
  const row = rows.find((r) => r.id === id);
  if (!row) throw new Error(`run ${id} is not listed`);
  return row;
}

/** Every run ends, and each ended well: no run was handed a GPU another one held (its lock would have failed it). */
async function allSucceed(ids: string[]): Promise<void> {
  open('all');
  const w = await qwex(sb, ['wait', ...ids]);
  expect(w.exitCode, `${String(w.stdout)}${String(w.stderr)}`).toBe(0);
  for (const id of ids) expect(record(id).status).toBe('succeeded');
}

describe('qwexd hands out GPUs (fake nvidia-smi inventory)', () => {
  it('eight 1-GPU runs on a 4-GPU inventory run four at a time, on disjoint GPUs named by UUID', async () => {
    const inventory = gpus(4);
    setGpus(inventory);
    await startDaemon(8);
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await submitHold('1'));

    const first = await until(() => {
      const started = ids.filter((id) => seen(id));
      return started.length === 4 ? started : undefined;
    }, 20_000, 'four runs to start');
    // Bounded: the other four do not start while the four hold every GPU.
    await sleep(1000);
    expect(ids.filter((id) => seen(id))).toEqual(first);

    const uuids = first.map((id) => seen(id)!.CUDA_VISIBLE_DEVICES);
    expect(new Set(uuids)).toEqual(new Set(inventory.map((g) => g.uuid)));
    for (const id of first) {
      const r = record(id);
      expect(r.gpus).toHaveLength(1);
      expect(seen(id)).toMatchObject({ CUDA_VISIBLE_DEVICES: r.gpus![0]!.uuid, QWEX_GPUS: String(r.gpus![0]!.index) });
      expect(r.gpus![0]).toMatchObject({ uuid: inventory[r.gpus![0]!.index]!.uuid, name: 'NVIDIA H100 80GB HBM3' });
      expect((await listed(id)).gpus).toEqual(r.gpus);
    }
    for (const id of ids.filter((i) => !first.includes(i))) {
      const row = await listed(id);
      expect(row.status).toBe('pending');
      expect(row.waitReason).toBe('waiting for 1 free GPU (0 free)');
    }
    const ps = await qwex(sb, ['ps']);
    expect(String(ps.stdout).split('\n')[0]).toMatch(/\bGPUS\b/);
    const status = await qwex(sb, ['status', first[0]!]);
    const held = record(first[0]!).gpus![0]!;
    expect(String(status.stdout).split('\n')).toContainEqual(expect.stringMatching(new RegExp(`^gpus +${held.index} ${held.uuid} \\(NVIDIA H100 80GB HBM3\\)$`)));

    await allSucceed(ids);
    for (const id of ids) expect(inventory.map((g) => g.uuid)).toContain(seen(id)!.CUDA_VISIBLE_DEVICES);
  });

  it('a 2-GPU run waits for two free ones, and gets two that no running run holds', async () => {
    setGpus(gpus(4));
    await startDaemon(8);
    const small = [await submitHold('1'), await submitHold('1'), await submitHold('1')];
    await until(() => (small.every((id) => seen(id)) ? true : undefined), 20_000, 'three 1-GPU runs to start');
    const big = await submitHold('2');
    const row = await until(async () => {
      const r = await listed(big);
      return r.waitReason ? r : undefined;
    }, 10_000, 'the 2-GPU run to wait');
    expect(row).toMatchObject({ status: 'pending', waitReason: 'waiting for 2 free GPUs (1 free)' });
    await sleep(500);
    expect(seen(big)).toBeUndefined();

    open(small[0]!);
    const bigSaw = await until(() => seen(big), 20_000, 'the 2-GPU run to start');
    const bigGpus = bigSaw.CUDA_VISIBLE_DEVICES!.split(',');
    expect(bigGpus).toHaveLength(2);
    expect(bigGpus).toEqual(record(big).gpus!.map((g) => g.uuid));
    expect(bigSaw.QWEX_GPUS).toBe(record(big).gpus!.map((g) => g.index).join(','));
    // The freed GPU is one of the two; the others still running hold neither.
    expect(bigGpus).toContain(seen(small[0]!)!.CUDA_VISIBLE_DEVICES);
    for (const id of small.slice(1)) expect(bigGpus).not.toContain(seen(id)!.CUDA_VISIBLE_DEVICES);
    await allSucceed([...small, big]);
  });

  it('a kill -9 of qwexd keeps the ledger: runs it adopts and runs a direct-mode monitor took over both still count', async () => {
    setGpus(gpus(4));
    const pid = await startDaemon(8);
    const adopted = await submitHold('2');
    const monitored = await submitHold('2');
    await until(() => (seen(adopted) && seen(monitored) ? true : undefined), 20_000, 'both 2-GPU runs to start');
    const queued = await submitHold('1');
    await until(async () => ((await listed(queued)).waitReason ? true : undefined), 10_000, 'the 1-GPU run to wait');

    process.kill(pid, 'SIGKILL');
    await until(() => (isAlive(pid) ? undefined : true));
    // Without qwexd, a look at this run hands it to a direct-mode monitor, which supervises it from then on.
    expect((await qwex(sb, ['status', monitored])).exitCode).toBe(0);
    const claim = join(sb.project, '.qwex', 'runs', monitored, 'claim.json');
    const monitor = await until(() => {
      const holder = JSON.parse(readFileSync(claim, 'utf8')) as { pid: number };
      return holder.pid !== pid && isAlive(holder.pid) ? holder.pid : undefined;
    }, 20_000, 'a monitor to take the run over');

    const restarted = await startDaemon(8);
    expect(restarted).not.toBe(pid);
    // Bounded: the queued run does not start while both held runs go on.
    await sleep(1500);
    expect(seen(queued)).toBeUndefined();
    expect(await listed(queued)).toMatchObject({ status: 'pending', waitReason: 'waiting for 1 free GPU (0 free)' });
    expect(JSON.parse(readFileSync(claim, 'utf8'))).toMatchObject({ pid: monitor });

    // The monitor's run ends: qwexd sees it end and frees its GPUs.
    open(monitored);
    const got = await until(() => seen(queued)?.CUDA_VISIBLE_DEVICES ?? undefined, 20_000, 'the queued run to start');
    expect(record(monitored).gpus!.map((g) => g.uuid)).toContain(got);
    expect(record(adopted).gpus!.map((g) => g.uuid)).not.toContain(got);
    await allSucceed([adopted, monitored, queued]);
  });

  it('a GPU filled by a process qwex did not start is skipped, and handed out once it is free again', async () => {
    const inventory = gpus(4);
    inventory[0]!.usedMb = 70_000;
    setGpus(inventory);
    await startDaemon(8);
    const first = await submitHold('1');
    expect(await until(() => seen(first)?.CUDA_VISIBLE_DEVICES ?? undefined, 20_000, 'the first run')).toBe(inventory[1]!.uuid);
    const more = [await submitHold('1'), await submitHold('1')];
    await until(() => (more.every((id) => seen(id)) ? true : undefined), 20_000, 'two more runs');
    expect(new Set(more.map((id) => seen(id)!.CUDA_VISIBLE_DEVICES))).toEqual(new Set([inventory[2]!.uuid, inventory[3]!.uuid]));

    const waiting = await submitHold('1');
    const row = await until(async () => {
      const r = await listed(waiting);
      return r.waitReason ? r : undefined;
    }, 10_000, 'the fourth run to wait');
    expect(row.waitReason).toBe('waiting for 1 free GPU (0 free; GPU 0 busy: 73 GB used by another process)');
    const status = await qwex(sb, ['status', waiting]);
    expect(String(status.stdout)).toMatch(/waiting for\s+waiting for 1 free GPU \(0 free; GPU 0 busy: 73 GB used by another process\)/);

    inventory[0]!.usedMb = 3;
    setGpus(inventory);
    expect(await until(() => seen(waiting)?.CUDA_VISIBLE_DEVICES ?? undefined, 20_000, 'the run to get GPU 0')).toBe(inventory[0]!.uuid);
    await allSucceed([first, ...more, waiting]);
  });

  it('samples each holder\'s GPUs and its own processes\' memory into gpu-usage.jsonl, one nvidia-smi call per look for all runs', async () => {
    // The default discovery: `nvidia-smi` on PATH (the fake, under that name), with utilisation.
    const bin = join(sb.project, '..', 'bin');
    mkdirSync(bin);
    symlinkSync(FAKE, join(bin, 'nvidia-smi'));
    delete sb.env.QWEX_GPU_DISCOVERY;
    delete sb.env.QWEX_GPU_PROCESSES;
    sb.env.PATH = `${bin}:${process.env.PATH}`;
    const inventory = gpus(2).map((g, i) => ({ ...g, usedMb: 500 + i, utilization: 37 + i }));
    setGpus(inventory);
    await startDaemon(8);
    const ids = [await submitHold('1'), await submitHold('1')];
    await until(() => (ids.every((id) => seen(id)) ? true : undefined), 20_000, 'both runs to start');
    const [a, b] = ids.map((id) => ({ id, seen: seen(id)!, gpu: record(id).gpus![0]! }));
    // The run's own process, and one qwex did not start on the other run's GPU.
    writeFileSync(join(fake, 'apps.csv'), `${a!.gpu.uuid}, ${a!.seen.pid}, 1234\n${b!.gpu.uuid}, 999999, 4321\n`);

    const usage = join(sb.project, '.qwex', 'runs', a!.id, 'gpu-usage.jsonl');
    const samples = await until(() => {
      const lines = readFileSync(usage, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      return lines.filter((l) => l.memoryMb === 1234).length >= 5 ? lines : undefined;
    }, 30_000, 'five samples with the run\'s process');
    const last = samples.at(-1)!;
    expect(last).toMatchObject({
      gpus: [{ index: a!.gpu.index, uuid: a!.gpu.uuid, memoryTotalMb: 81559, memoryUsedMb: 500 + a!.gpu.index, utilizationPercent: 37 + a!.gpu.index }],
      processes: [{ pid: a!.seen.pid, gpu: a!.gpu.uuid, memoryMb: 1234 }],
      memoryMb: 1234,
    });
    // The other run's GPU carries an outside process only: its own processes use nothing.
    const other = readFileSync(join(sb.project, '.qwex', 'runs', b!.id, 'gpu-usage.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(other.at(-1)).toMatchObject({ processes: [], memoryMb: 0 });

    // One process listing per look serves both runs: never one per run.
    const calls = readFileSync(join(fake, 'calls.log'), 'utf8').trim().split('\n');
    const listings = calls.filter((c) => c.startsWith('--query-compute-apps')).length;
    const linesOfA = readFileSync(usage, 'utf8').trim().split('\n').length;
    expect(listings).toBeGreaterThanOrEqual(5);
    expect(listings).toBeLessThanOrEqual(linesOfA + 2);
    await allSucceed(ids);
  });

  it('local and Docker runs share one ledger: a container gets the GPUs no local run holds, by UUID', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', await dockerUnavailable());
    const inventory = gpus(2);
    setGpus(inventory);
    await startDaemon(8);
    const local = await submitHold('1');
    const localGpu = await until(() => seen(local)?.CUDA_VISIBLE_DEVICES ?? undefined, 20_000, 'the local run');
    const docker = ['--backend', 'docker', '--image', 'qwex-test/busybox:latest', '--pull', 'never'];
    const both = String((await qwex(sb, ['run', '-d', ...docker, '--gpus', '2', '--', 'true'])).stdout).trim();
    const row = await until(async () => {
      const r = await listed(both);
      return r.waitReason ? r : undefined;
    }, 10_000, 'the 2-GPU container run to wait');
    expect(row.waitReason).toBe('waiting for 2 free GPUs (1 free)');

    const one = String((await qwex(sb, ['run', '-d', ...docker, '--gpus', '1', '--', 'true'])).stdout).trim();
    await qwex(sb, ['wait', one]);
    const r = record(one);
    const other = inventory.map((g) => g.uuid).find((u) => u !== localGpu)!;
    expect(r.gpus!.map((g) => g.uuid)).toEqual([other]);
    // The engine was asked for that device by UUID; this engine has no NVIDIA runtime, so it refuses to start it.
    expect(r.job.container!.resources.gpus).toEqual([other]);
    expect(r).toMatchObject({ status: 'failed', error: { code: 'QWEX_CONTAINER_FAILED' } });
    expect(r.error!.message).toMatch(/gpu/i);
    expect(record(both).status).toBe('pending');

    open(local);
    await qwex(sb, ['wait', local]);
    await qwex(sb, ['wait', both]);
    expect(record(both).job.container!.resources.gpus).toEqual(inventory.map((g) => g.uuid));
    expect(record(both).gpus!.map((g) => g.uuid)).toEqual(inventory.map((g) => g.uuid));
  });
});

describe('without GPUs, and without qwexd', () => {
  it('--gpus on a machine whose GPUs cannot be listed ends the run with the discovery command\'s words, starting qwexd for it', async () => {
    writeFileSync(join(fake, 'fail'), "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n");
    const r = await qwex(sb, ['run', '--gpus', '1', '--', 'true']);
    expect(String(r.stderr)).toMatch(/started qwexd \(pid \d+\) to hand out GPUs/);
    expect(String(r.stderr)).toContain("couldn't communicate with the NVIDIA driver");
    expect(r.exitCode).toBe(130);
    const [run] = await qwexJson<ListedRun[]>(sb, ['ps']);
    expect(record(run!.id)).toMatchObject({ status: 'cancelled', error: { code: 'QWEX_NOT_STARTED', message: expect.stringMatching(/^it asks for 1 GPU, and the GPUs of this machine cannot be listed: .*fake-nvidia-smi failed \(exit 9\): NVIDIA-SMI has failed/) } });
    expect(record(run!.id).gpus).toBeUndefined();

    // A discovery command that is not there (each qwexd reads QWEX_GPU_DISCOVERY when it starts).
    await qwex(sb, ['daemon', 'stop']);
    sb.env.QWEX_GPU_DISCOVERY = `${join(sb.project, 'no-such-nvidia-smi')} --query-gpu=index`;
    const missing = await qwex(sb, ['run', '--gpus', '1', '--', 'true']);
    expect(String(missing.stderr)).toMatch(/cannot be listed: .*no-such-nvidia-smi --query-gpu=index failed \(exit 127\): .*not found/);

    // Requests this machine can never meet.
    await qwex(sb, ['daemon', 'stop']);
    sb.env.QWEX_GPU_DISCOVERY = FAKE;
    renameSync(join(fake, 'fail'), join(fake, 'fail.off'));
    setGpus(gpus(2));
    const tooMany = await qwex(sb, ['run', '--gpus', '3', '--', 'true']);
    expect(String(tooMany.stderr)).toContain('it asks for 3 GPUs, and this machine has 2');
    const notHere = await qwex(sb, ['run', '--gpus', 'device=0,7', '--', 'true']);
    expect(String(notHere.stderr)).toContain('it asks for GPU 7, which is not on this machine');
  });

  it('a run that asks for no GPUs sees none, unless the config or its own env says otherwise', async () => {
    const probe = ['--', node, '-e', 'console.log(JSON.stringify({ c: process.env.CUDA_VISIBLE_DEVICES ?? null, q: process.env.QWEX_GPUS ?? null }))'];
    const env = { QWEX_NO_DAEMON: '1', CUDA_VISIBLE_DEVICES: 'GPU-from-the-shell' };
    const none = await qwex(sb, ['run', '-q', ...probe], { env });
    expect(JSON.parse(String(none.stdout))).toEqual({ c: '', q: '' });
    const own = await qwex(sb, ['run', '-q', '-e', 'CUDA_VISIBLE_DEVICES=3', ...probe], { env });
    expect(JSON.parse(String(own.stdout))).toEqual({ c: '3', q: '' });
    writeFileSync(join(sb.project, 'qwex.yaml'), 'unrequested_gpus: all\n');
    const all = await qwex(sb, ['run', '-q', ...probe], { env });
    expect(JSON.parse(String(all.stdout))).toEqual({ c: 'GPU-from-the-shell', q: '' });
  });

  it('without qwexd (QWEX_NO_DAEMON=1) a run that asks for GPUs fails before its command runs; other backends refuse --gpus', async () => {
    writeFileSync(join(sb.project, 'qwex.yaml'), 'backends:\n  local:\n    gpus: 2\n');
    const r = await qwex(sb, ['run', '--', 'sh', '-c', 'echo ran'], { env: { QWEX_NO_DAEMON: '1' } });
    expect(r.exitCode).toBe(1);
    expect(String(r.stdout)).not.toContain('ran');
    const [run] = await qwexJson<ListedRun[]>(sb, ['ps'], {});
    expect(record(run!.id)).toMatchObject({ status: 'failed', job: { gpus: 2 }, error: { code: 'QWEX_NOT_STARTED', message: expect.stringContaining('only qwexd hands out') } });

    // qwex submit: --gpus for every job, a job spec's own `gpus` over it.
    writeFileSync(join(sb.project, 'jobs.txt'), 'echo a\n{"command": "echo b", "gpus": 3}\n');
    const submitted = await qwex(sb, ['submit', 'jobs.txt', '--gpus', '1', '--json'], { env: { QWEX_NO_DAEMON: '1' } });
    expect(submitted.exitCode, String(submitted.stderr)).toBe(0);
    expect((JSON.parse(String(submitted.stdout)) as Run[]).map((r) => r.job.gpus)).toEqual([1, 3]);

    const ssh = await qwex(sb, ['run', '--backend', 'ssh', '--host', 'nowhere', '--gpus', '1', '--', 'true']);
    expect(ssh.exitCode).toBe(2);
    expect(String(ssh.stderr)).toMatch(/--gpus is for the local, docker, .*backends, not "ssh"/);
    writeFileSync(join(sb.project, 'qwex.yaml'), 'backends:\n  local:\n    gpus: lots\n');
    const bad = await qwex(sb, ['run', '--', 'true']);
    expect(bad.exitCode).toBe(5);
    expect(String(bad.stderr)).toContain('backends.local: gpus: "lots" is not a GPU request');
  });
});
