/**
 * The GPU ledger's rules, one decision at a time, and the parsing of
 * nvidia-smi's output. Discovery is a fake function here (named so) over a
 * given inventory; the records are real run.json files in a real store.
 * test/gpu.test.ts drives the same ledger through the real qwexd.
 */
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { discoverGpus, discoveryCommand, parseInventory, parseProcesses, type Gpu } from '../src/gpu/discovery.js';
import { GpuLedger, gpuLedgerSettings } from '../src/gpu/ledger.js';
import { newRunId } from '../src/new-run-id.js';
import type { Job, Run } from '../src/run/model.js';
import { RunStore } from '../src/store/run-store.js';
import { FIXTURES } from './helpers.js';

let base: string;
let store: RunStore;
let ledger: GpuLedger | undefined;
let pokes = 0;
let looks = 0;
let inventory: Gpu[] = [];
const logged: string[] = [];
const log = { info: (e: string) => logged.push(e), warn: (e: string) => logged.push(e), error: (e: string) => logged.push(e) };

beforeEach(() => {
  base = realpathSync(mkdtempSync(join(tmpdir(), 'qwex-gpu-ledger-')));
  store = new RunStore({ indexFile: join(base, 'index.db') });
  pokes = 0;
  looks = 0;
  inventory = [0, 1, 2].map((i) => ({ index: i, uuid: `GPU-${i}`, name: 'Fake GPU', memoryTotalMb: 16000, memoryUsedMb: 0 }));
});
afterEach(() => {
  ledger?.close();
  ledger = undefined;
  store.close();
  rmSync(base, { recursive: true, force: true });
});

/** A ledger whose discovery is a fake over `inventory`, counting its calls. */
function fakeLedger(): GpuLedger {
  ledger = new GpuLedger({
    store,
    log,
    poke: () => pokes++,
    discover: () => {
      looks++;
      return Promise.resolve(inventory.map((g) => ({ ...g })));
    },
    processes: () => Promise.resolve([]),
    sampleMs: 60_000,
  });
  return ledger;
}

/** A run record on disk, as qwexd would find it. */
function runOn(extra: Partial<Job>, status: Run['status'] = 'pending', gpus?: Run['gpus']): { dir: string; run: Run } {
  const id = newRunId();
  const dir = join(base, 'runs', id);
  mkdirSync(dir, { recursive: true });
  const run: Run = {
    version: 1,
    id,
    project: base,
    job: { command: ['true'], shell: false, cwd: base, env: {}, backend: 'local', backendOptions: {}, artifacts: { watch: [], ignore: [], maxFileSizeMb: 1 }, killGraceMs: 1000, ...extra },
    status,
    createdAt: new Date().toISOString(),
    exitCode: null,
    signal: null,
    backend: { name: extra.backend ?? 'local' },
    ...(gpus ? { gpus } : {}),
    metadata: { host: 'h', user: 'u', qwexVersion: '0' },
  };
  writeFileSync(join(dir, 'run.json'), JSON.stringify(run));
  return { dir, run };
}

/** Admits after the first look, which every ledger must take before it hands anything out. */
async function admitted(l: GpuLedger, dir: string, run: Run): Promise<ReturnType<GpuLedger['admit']>> {
  const first = l.admit(dir, run);
  if (!('wait' in first) || !first.wait.includes('look at the GPUs')) return first;
  await until(() => pokes > 0);
  return l.admit(dir, run);
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(check()).toBe(true);
}

function started(decision: ReturnType<GpuLedger['admit']>, run: Run): Run {
  if (!('start' in decision)) throw new Error(`expected a start, got ${JSON.stringify(decision)}`);
  return decision.patch ? decision.patch(run) : run;
}

describe('the GPU ledger (fake discovery function)', () => {
  it('runs that ask for no GPUs, or whose command runs elsewhere, start without a look', () => {
    const l = fakeLedger();
    const plain = runOn({});
    expect(l.admit(plain.dir, plain.run)).toEqual({ start: true });
    const remote = runOn({ backend: 'ssh', backendOptions: { host: 'x' }, gpus: 2 });
    expect(l.admit(remote.dir, remote.run)).toEqual({ start: true });
    expect(looks).toBe(0);
  });

  it('`all` waits for every GPU; device ids by index or UUID wait for those, naming who holds them', async () => {
    const l = fakeLedger();
    const one = runOn({ gpus: ['1'] });
    const got = started(await admitted(l, one.dir, one.run), one.run);
    expect(got.gpus).toEqual([{ index: 1, uuid: 'GPU-1', name: 'Fake GPU' }]);
    writeFileSync(join(one.dir, 'run.json'), JSON.stringify({ ...got, status: 'running' }));

    const all = runOn({ gpus: 'all' });
    expect(l.admit(all.dir, all.run)).toEqual({ wait: `waiting for all 3 GPUs to be free (2 free; GPU 1 held by run ${one.run.id.slice(0, 13)})` });
    const same = runOn({ gpus: ['GPU-1', '2'] });
    expect(l.admit(same.dir, same.run)).toEqual({ wait: `waiting for GPU GPU-1, 2 to be free (1 free; GPU 1 held by run ${one.run.id.slice(0, 13)})` });
    const other = runOn({ gpus: ['GPU-0', '2'] });
    expect(started(l.admit(other.dir, other.run), other.run).gpus!.map((g) => g.uuid)).toEqual(['GPU-0', 'GPU-2']);
  });

  it('a container\'s request is pinned to the UUIDs it was given, so its engine gets those devices', async () => {
    const l = fakeLedger();
    const container = { image: 'img', pull: 'never' as const, mounts: [], env: {}, resources: { gpus: 2 as const } };
    const { dir, run } = runOn({ backend: 'docker', container });
    const got = started(await admitted(l, dir, run), run);
    expect(got.job.container!.resources.gpus).toEqual(['GPU-0', 'GPU-1']);
    expect(got.gpus!.map((g) => g.uuid)).toEqual(['GPU-0', 'GPU-1']);
  });

  it('a freed GPU is handed out only after a fresh look at it', async () => {
    const l = fakeLedger();
    const a = runOn({ gpus: 3 });
    const got = started(await admitted(l, a.dir, a.run), a.run);
    writeFileSync(join(a.dir, 'run.json'), JSON.stringify({ ...got, status: 'running' }));
    const b = runOn({ gpus: 1 });
    expect(l.admit(b.dir, b.run)).toEqual({ wait: 'waiting for 1 free GPU (0 free)' });

    // What a's processes left on the GPUs counts as another's once a look sees it; before a look, nothing is handed out.
    const looksAtRelease = looks;
    const pokesAtRelease = pokes;
    l.release(a.dir);
    const settling = l.admit(b.dir, b.run);
    expect(settling).toEqual({ wait: 'waiting for 1 free GPU (0 free; GPU 0 just freed, being looked at; GPU 1 just freed, being looked at; GPU 2 just freed, being looked at)' });
    await until(() => pokes > pokesAtRelease);
    expect(looks).toBeGreaterThan(looksAtRelease);
    expect(started(l.admit(b.dir, b.run), b.run).gpus!.map((g) => g.uuid)).toEqual(['GPU-0']);
  });

  it('GPUs are held from when the run\'s record gets them; a holder whose record ended without a word gives them back at the next wait', async () => {
    const l = fakeLedger();
    // Admitted, but not started (another admission rule holds it back, or a cancel claimed it first): it holds nothing.
    const unstarted = runOn({ gpus: 3 });
    expect(await admitted(l, unstarted.dir, unstarted.run)).toMatchObject({ start: true });
    const a = runOn({ gpus: 1 });
    expect(started(l.admit(a.dir, a.run), a.run).gpus!.map((g) => g.uuid)).toEqual(['GPU-0']);
    writeFileSync(join(a.dir, 'run.json'), JSON.stringify({ ...a.run, status: 'cancelled' }));
    const c = runOn({ gpus: 3 });
    const pokesBefore = pokes;
    expect(l.admit(c.dir, c.run)).toEqual({ wait: 'waiting for 3 free GPUs (2 free; GPU 0 just freed, being looked at)' });
    await until(() => pokes > pokesBefore);
    expect(started(l.admit(c.dir, c.run), c.run).gpus).toHaveLength(3);
  });

  it('after a restart, the active records hold their GPUs, whoever supervises them', async () => {
    const held = runOn({ gpus: 2 }, 'running', [
      { index: 0, uuid: 'GPU-0', name: 'Fake GPU' },
      { index: 2, uuid: 'GPU-2', name: 'Fake GPU' },
    ]);
    store.runIndex().upsert(held.run, held.dir);
    const ended = runOn({ gpus: 1 }, 'succeeded', [{ index: 1, uuid: 'GPU-1', name: 'Fake GPU' }]);
    store.runIndex().upsert(ended.run, ended.dir);
    const l = fakeLedger();
    l.restoreActive();
    const next = runOn({ gpus: 2 });
    expect(await admitted(l, next.dir, next.run)).toEqual({ wait: 'waiting for 2 free GPUs (1 free)' });
    // The held run itself, asked again (it was patched but not started), keeps what it had.
    expect(started(l.admit(held.dir, held.run), held.run).gpus!.map((g) => g.uuid)).toEqual(['GPU-0', 'GPU-2']);
  });

  it('a GPU over the busy threshold is skipped; more GPUs than there are, or ids not there, are refused for good', async () => {
    inventory[0]!.memoryUsedMb = 900;
    inventory[1]!.memoryUsedMb = 1025;
    const l = fakeLedger();
    const two = runOn({ gpus: 2 });
    expect(started(await admitted(l, two.dir, two.run), two.run).gpus!.map((g) => g.uuid)).toEqual(['GPU-0', 'GPU-2']);
    const four = runOn({ gpus: 4 });
    expect(l.admit(four.dir, four.run)).toEqual({ cancel: 'it asks for 4 GPUs, and this machine has 3' });
    const missing = runOn({ gpus: ['GPU-9'] });
    expect(l.admit(missing.dir, missing.run)).toEqual({ cancel: 'it asks for GPU GPU-9, which is not on this machine (0: GPU-0, 1: GPU-1, 2: GPU-2)' });
  });

  it('reads its settings from qwexd\'s environment and refuses bad ones', () => {
    expect(gpuLedgerSettings({ QWEX_GPU_BUSY_MB: '0', QWEX_GPU_SAMPLE_MS: '250' })).toEqual({ busyMemoryMb: 0, sampleMs: 250 });
    expect(gpuLedgerSettings({})).toEqual({});
    expect(() => gpuLedgerSettings({ QWEX_GPU_SAMPLE_MS: 'fast' })).toThrow('QWEX_GPU_SAMPLE_MS: "fast" is not a whole number of at least 100');
  });
});

describe('nvidia-smi output', () => {
  it('parses the inventory, with or without utilisation, [N/A] memory and MIG UUIDs; refuses what is not that shape', () => {
    const text = '0, GPU-5d5ba0d6-1111, NVIDIA A100-SXM4-40GB, 40960, [N/A], 12\n1, MIG-c6d4f1ef-2222, NVIDIA A100 MIG 1g.5gb, 4864, 13\n\n';
    expect(parseInventory(text, 'x')).toEqual([
      { index: 0, uuid: 'GPU-5d5ba0d6-1111', name: 'NVIDIA A100-SXM4-40GB', memoryTotalMb: 40960, memoryUsedMb: 0, utilizationPercent: 12 },
      { index: 1, uuid: 'MIG-c6d4f1ef-2222', name: 'NVIDIA A100 MIG 1g.5gb', memoryTotalMb: 4864, memoryUsedMb: 13 },
    ]);
    expect(() => parseInventory('No devices were found\n', 'nvidia-smi')).toThrow('nvidia-smi printed line 1 as "No devices were found", not "index, uuid, name, memory.total, memory.used"');
    expect(() => parseInventory('0, GPU-a, x, 1, 0\n1, GPU-a, x, 1, 0\n', 'd')).toThrow('d listed a GPU UUID twice');
    expect(parseProcesses('GPU-a, 123, 456\nGPU-b, [N/A], [N/A]\n')).toEqual([{ gpuUuid: 'GPU-a', pid: 123, usedMemoryMb: 456 }]);
  });

  it('runs QWEX_GPU_DISCOVERY as a program when it names one (spaces and all), else as a command line', async () => {
    const dir = join(base, 'a dir with spaces');
    mkdirSync(dir);
    const program = join(dir, 'list-gpus');
    writeFileSync(program, '#!/bin/sh\necho "0, GPU-x, Fake, 100, 1"\n', { mode: 0o755 });
    expect(discoveryCommand({ QWEX_GPU_DISCOVERY: program })).toEqual({ file: program, args: [], display: program });
    expect(await discoverGpus(discoveryCommand({ QWEX_GPU_DISCOVERY: program }))).toEqual([{ index: 0, uuid: 'GPU-x', name: 'Fake', memoryTotalMb: 100, memoryUsedMb: 1 }]);
    const line = `printf '0, GPU-y, Fake, 100, 2\\n'`;
    expect((await discoverGpus(discoveryCommand({ QWEX_GPU_DISCOVERY: line })))[0]!.uuid).toBe('GPU-y');
    expect(discoveryCommand({})).toMatchObject({ file: 'nvidia-smi', args: ['--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu', '--format=csv,noheader,nounits'] });
    await expect(discoverGpus({ file: join(base, 'none'), args: [], display: 'nvidia-smi' })).rejects.toThrow('nvidia-smi was not found');
    // The fake nvidia-smi with no arguments prints exactly the five columns.
    const fakeDir = join(base, 'fake');
    mkdirSync(fakeDir);
    writeFileSync(join(fakeDir, 'gpus.csv'), '0, GPU-z, Fake, 100, 3, 50\n');
    process.env.FAKE_NVIDIA_SMI_DIR = fakeDir;
    try {
      expect(await discoverGpus(discoveryCommand({ QWEX_GPU_DISCOVERY: join(FIXTURES, 'fake-nvidia-smi') }))).toEqual([{ index: 0, uuid: 'GPU-z', name: 'Fake', memoryTotalMb: 100, memoryUsedMb: 3 }]);
    } finally {
      delete process.env.FAKE_NVIDIA_SMI_DIR;
    }
  });
});
