import { ErrorCode, QwexError } from '../errors.js';
import { isTerminal, type Job, type Run, type RunGpu } from '../run/model.js';
import type { Admission, SupervisorLog } from '../run/supervisor.js';
import type { RunStore } from '../store/run-store.js';
import { shortId } from '../ids.js';
import { discoverGpus, listGpuProcesses, type Gpu, type GpuProcess } from './discovery.js';
import { describeRequest, gpuRequestOf, type GpuRequest } from './request.js';
import { writeUsageSamples } from './usage.js';

/** Between two looks at the GPUs while runs hold or wait for them (QWEX_GPU_SAMPLE_MS). */
export const GPU_SAMPLE_MS = 5000;
/** A GPU with more memory in use than this (MiB), by something qwex did not start, is not handed out (QWEX_GPU_BUSY_MB). */
export const GPU_BUSY_MB = 1024;
/** How often a run that waits may make the ledger re-read its holders' records (each queue move asks every waiting run). */
const FORGET_EVERY_MS = 1000;

/** qwexd's settings of the ledger from its environment (QWEX_GPU_BUSY_MB, QWEX_GPU_SAMPLE_MS). Throws QWEX_USAGE on a bad value. */
export function gpuLedgerSettings(env: NodeJS.ProcessEnv): { busyMemoryMb?: number; sampleMs?: number } {
  const read = (name: string, min: number): number | undefined => {
    const raw = env[name];
    if (raw === undefined || raw === '') return undefined;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min) {
      throw new QwexError(ErrorCode.Usage, `${name}: "${raw}" is not a whole number of at least ${min}`, { hint: 'see docs/gpus.md' });
    }
    return value;
  };
  const busyMemoryMb = read('QWEX_GPU_BUSY_MB', 0);
  const sampleMs = read('QWEX_GPU_SAMPLE_MS', 100);
  return { ...(busyMemoryMb === undefined ? {} : { busyMemoryMb }), ...(sampleMs === undefined ? {} : { sampleMs }) };
}

export interface GpuLedgerOptions {
  store: RunStore;
  log: SupervisorLog;
  /** Moves the queue on (Supervisor.poke): a look at the GPUs may have freed some. Never called from inside `admit`. */
  poke: () => void;
  discover?: () => Promise<Gpu[]>;
  processes?: () => Promise<GpuProcess[]>;
  busyMemoryMb?: number;
  sampleMs?: number;
}

type Decision = ReturnType<Admission['admit']>;

interface Inventory {
  gpus: Gpu[];
  /** Which look it was (1, 2, ...): a GPU freed after that look began was not seen free by it. */
  look: number;
  doneAt: number;
}

/**
 * qwexd's ledger of this machine's GPUs: which run holds which, as an
 * admission rule of its queue. A run that asks for GPUs starts only when
 * enough are free: held by no run, and not filled by a process qwex did not
 * start (memory in use above a threshold); the ones it gets are recorded in
 * its run.json (`gpus`) before it starts, and freed when it ends. The
 * records are the truth: after a restart the ledger is rebuilt from the
 * active runs' records, whoever supervises them now.
 *
 * What the GPUs are, and how full, comes from one discovery call per look,
 * shared by every run; a look happens when a run asks and the last one is
 * old, after a run ends, and every `sampleMs` while runs hold or wait. Each
 * look at a held GPU's use is appended to its run's gpu-usage.jsonl.
 */
export class GpuLedger implements Admission {
  /** What the last look that answered saw. */
  private inventory: Inventory | undefined;
  /** How many looks have begun. */
  private looksBegun = 0;
  /** Why the GPUs could not be listed, while they never could. */
  private failure: { message: string; at: number } | undefined;
  private looking: Promise<void> | undefined;
  /** Run directory -> the GPUs its record says it holds. */
  private readonly held = new Map<string, RunGpu[]>();
  /** GPU UUID -> the looks begun when a run gave it back: only a later look shows whether it is free. */
  private readonly releasedAt = new Map<string, number>();
  /** Some run was told to wait: the next look pokes the queue. */
  private waiting = false;
  private readonly timer: NodeJS.Timeout;
  private warnedProcesses = false;
  private forgottenAt = 0;
  private closed = false;
  private readonly busyMb: number;
  private readonly sampleMs: number;
  private readonly discover: () => Promise<Gpu[]>;
  private readonly processes: () => Promise<GpuProcess[]>;

  constructor(private readonly options: GpuLedgerOptions) {
    this.busyMb = options.busyMemoryMb ?? GPU_BUSY_MB;
    this.sampleMs = options.sampleMs ?? GPU_SAMPLE_MS;
    this.discover = options.discover ?? (() => discoverGpus());
    this.processes = options.processes ?? (() => listGpuProcesses());
    this.timer = setInterval(() => void this.tick(), this.sampleMs);
    this.timer.unref();
  }

  /** Counts the GPUs every active run's record holds, whoever supervises it (a direct-mode monitor too). Before the queue starts. */
  restoreActive(): void {
    for (const row of this.options.store.runIndex().list({ statuses: ['pending', 'running'] })) {
      try {
        this.restore(row.runDir, this.options.store.read(row.runDir));
      } catch (error) {
        this.options.log.warn('gpu-restore-skip', { dir: row.runDir, message: (error as Error).message });
      }
    }
    if (this.held.size > 0) this.options.log.info('gpus-restored', { runs: this.held.size, gpus: [...this.held.values()].flat().map((g) => g.uuid) });
  }

  restore(dir: string, run: Run): void {
    if (isTerminal(run.status) || !run.gpus || run.gpus.length === 0) return;
    this.held.set(dir, run.gpus);
  }

  release(dir: string): void {
    const gpus = this.held.get(dir);
    if (!gpus) return;
    this.held.delete(dir);
    for (const gpu of gpus) this.releasedAt.set(gpu.uuid, this.looksBegun);
    this.options.log.info('gpus-released', { dir, gpus: gpus.map((g) => g.uuid) });
    // Freed GPUs are handed out after a look at them (what the run left behind would count as another process's).
    this.waiting = true;
    void this.look();
  }

  admit(dir: string, run: Run): Decision {
    const request = gpuRequestOf(run.job);
    if (request === undefined) return { start: true };
    const mine = this.held.get(dir);
    if (mine) return { start: true, patch: this.assign(dir, mine) }; // restored from its record: it keeps what it had
    const inventory = this.inventory;
    if (!inventory) {
      if (this.failure && Date.now() - this.failure.at < this.freshMs()) {
        return { cancel: `it asks for ${describeRequest(request)}, and the GPUs of this machine cannot be listed: ${this.failure.message}` };
      }
      return this.waitForLook('waiting for a first look at the GPUs');
    }
    if (Date.now() - inventory.doneAt > this.freshMs()) return this.waitForLook('waiting for a fresh look at the GPUs');

    const wanted = resolve(request, inventory.gpus);
    if ('impossible' in wanted) return { cancel: wanted.impossible };
    let decision = this.take(dir, request, wanted.gpus, inventory);
    if ('wait' in decision && Date.now() - this.forgottenAt > FORGET_EVERY_MS && this.forgetEnded() > 0) decision = this.take(dir, request, wanted.gpus, inventory);
    return decision;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
  }

  /** Hands out `candidates` (how many `request` says), or says why not. */
  private take(dir: string, request: GpuRequest, candidates: Gpu[], inventory: Inventory): Decision {
    const holders = this.holders();
    const free: Gpu[] = [];
    const notes: string[] = [];
    for (const gpu of candidates) {
      const holder = holders.get(gpu.uuid);
      const released = this.releasedAt.get(gpu.uuid);
      if (holder !== undefined) {
        if (typeof request !== 'number') notes.push(`GPU ${gpu.index} held by run ${shortId(runIdOf(holder))}`);
      } else if (released !== undefined && released >= inventory.look) {
        notes.push(`GPU ${gpu.index} just freed, being looked at`);
        this.waiting = true;
        void this.look();
      } else if (gpu.memoryUsedMb > this.busyMb) {
        notes.push(`GPU ${gpu.index} busy: ${formatMb(gpu.memoryUsedMb)} used by another process`);
      } else {
        free.push(gpu);
      }
    }
    const count = typeof request === 'number' ? request : candidates.length;
    if (free.length >= count) {
      return { start: true, patch: this.assign(dir, free.slice(0, count).map(({ index, uuid, name }) => ({ index, uuid, name }))) };
    }
    this.waiting = true;
    const what = typeof request === 'number' ? `${request} free GPU${request === 1 ? '' : 's'}` : request === 'all' ? `all ${count} GPUs to be free` : `${describeRequest(request)} to be free`;
    return { wait: `waiting for ${what} (${[`${free.length} free`, ...notes].join('; ')})` };
  }

  /**
   * The patch that records the GPUs in the run's record. The GPUs are held
   * from when it is applied, which the supervisor does only once the run is
   * really starting: a run that another admission rule still holds back, or
   * that a cancel claimed first, holds nothing. A container's request is
   * pinned to those devices, so its engine gets their UUIDs.
   */
  private assign(dir: string, gpus: RunGpu[]): (run: Run) => Run {
    return (run) => {
      this.held.set(dir, gpus);
      this.options.log.info('gpus-assigned', { dir, runId: run.id, gpus: gpus.map((g) => g.uuid) });
      return { ...run, gpus, job: pinContainer(run.job, gpus) };
    };
  }

  /** Gives back what runs whose record ended without the ledger being told held (a release that never came). */
  private forgetEnded(): number {
    this.forgottenAt = Date.now();
    let forgotten = 0;
    for (const dir of [...this.held.keys()]) {
      let ended: boolean;
      try {
        ended = isTerminal(this.options.store.read(dir).status);
      } catch (error) {
        // Its directory is gone; a record that cannot be read now keeps its GPUs (a wrong release would share them).
        ended = error instanceof QwexError && error.code === ErrorCode.RunNotFound;
      }
      if (ended) {
        this.release(dir);
        forgotten++;
      }
    }
    return forgotten;
  }

  private holders(): Map<string, string> {
    const holders = new Map<string, string>();
    for (const [dir, gpus] of this.held) for (const gpu of gpus) holders.set(gpu.uuid, dir);
    return holders;
  }

  private waitForLook(reason: string): Decision {
    this.waiting = true;
    void this.look();
    return { wait: reason };
  }

  private freshMs(): number {
    return 2 * this.sampleMs;
  }

  /** One discovery call at a time; every caller shares it. Pokes the queue when it taught something to runs that wait. */
  private look(): Promise<void> {
    this.looking ??= (async () => {
      const at = Date.now();
      const look = ++this.looksBegun;
      let learned = false;
      try {
        const gpus = await this.discover();
        if (!this.inventory || this.inventory.gpus.length !== gpus.length) this.options.log.info('gpus-discovered', { gpus: gpus.map((g) => `${g.index} ${g.uuid} ${g.name}`) });
        this.inventory = { gpus, look, doneAt: Date.now() };
        this.failure = undefined;
        for (const [uuid, released] of this.releasedAt) if (released < look) this.releasedAt.delete(uuid);
        learned = true;
      } catch (error) {
        const message = (error as Error).message;
        if (this.failure?.message !== message) this.options.log.warn('gpu-discovery-failed', { message });
        // While it never worked, runs that ask for GPUs are told why; once it has, a failed look keeps the last one.
        if (!this.inventory) {
          this.failure = { message, at };
          learned = true;
        }
      } finally {
        this.looking = undefined;
      }
      if (learned && this.waiting && !this.closed) {
        this.waiting = false;
        this.options.poke();
      }
    })();
    return this.looking;
  }

  private async tick(): Promise<void> {
    if (this.closed || (this.held.size === 0 && !this.waiting)) return;
    this.forgetEnded();
    await this.look();
    if (this.held.size === 0 || !this.inventory) return;
    let processes: GpuProcess[] | undefined;
    try {
      processes = await this.processes();
    } catch (error) {
      if (!this.warnedProcesses) this.options.log.warn('gpu-processes-failed', { message: (error as Error).message });
      this.warnedProcesses = true;
    }
    writeUsageSamples(this.options.store, this.held, this.inventory.gpus, processes, (dir, error) =>
      this.options.log.warn('gpu-usage-write-failed', { dir, message: error.message }),
    );
  }
}


function pinContainer(job: Job, gpus: RunGpu[]): Job {
  if (job.container?.resources.gpus === undefined) return job;
  return { ...job, container: { ...job.container, resources: { ...job.container.resources, gpus: gpus.map((g) => g.uuid) } } };
}

/** The GPUs a request may get, or why it never can be met here. */
function resolve(request: GpuRequest, gpus: Gpu[]): { gpus: Gpu[] } | { impossible: string } {
  const sorted = [...gpus].sort((a, b) => a.index - b.index);
  if (sorted.length === 0) return { impossible: `it asks for ${describeRequest(request)}, and no GPU was found on this machine` };
  if (request === 'all') return { gpus: sorted };
  if (typeof request === 'number') {
    if (request > sorted.length) return { impossible: `it asks for ${describeRequest(request)}, and this machine has ${sorted.length}` };
    return { gpus: sorted };
  }
  const chosen: Gpu[] = [];
  for (const id of request) {
    const gpu = sorted.find((g) => g.uuid === id || String(g.index) === id);
    if (!gpu) return { impossible: `it asks for GPU ${id}, which is not on this machine (${sorted.map((g) => `${g.index}: ${g.uuid}`).join(', ')})` };
    if (!chosen.includes(gpu)) chosen.push(gpu);
  }
  return { gpus: chosen };
}

/** The run id of a run directory (.qwex/runs/<id>). */
function runIdOf(dir: string): string {
  return dir.slice(dir.lastIndexOf('/') + 1);
}

/** MiB as "70 GB" (decimal, as people say it) or "900 MB". */
function formatMb(mb: number): string {
  const bytes = mb * 1024 * 1024;
  if (bytes >= 10e9) return `${Math.round(bytes / 1e9)} GB`;
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  return `${Math.round(bytes / 1e6)} MB`;
}
