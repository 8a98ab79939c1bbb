import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { ErrorCode, QwexError } from '../errors.js';

/**
 * What the machine's GPUs are and how busy, from nvidia-smi's CSV output
 * (or a command that prints the same). nvidia-smi rather than NVML: no
 * maintained Node binding of NVML exists, and the CLI comes with every
 * driver. One call lists every GPU, so one call per tick serves every run.
 */

/** The inventory query; the first five columns are the shape QWEX_GPU_DISCOVERY prints. */
export const INVENTORY_QUERY = ['--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu', '--format=csv,noheader,nounits'];
/** The compute processes on every GPU. */
export const PROCESSES_QUERY = ['--query-compute-apps=gpu_uuid,pid,used_memory', '--format=csv,noheader,nounits'];
/** How long one call may take: nvidia-smi without persistence mode needs a few seconds on a large machine. */
const CALL_TIMEOUT_MS = 20_000;

export interface Gpu {
  index: number;
  uuid: string;
  name: string;
  memoryTotalMb: number;
  /** MiB in use, by anyone; 0 when the driver does not say ([N/A], as for a GPU in MIG mode). */
  memoryUsedMb: number;
  /** Percent of time a kernel ran over the last sample period, when the command says. */
  utilizationPercent?: number;
}

export interface GpuProcess {
  gpuUuid: string;
  pid: number;
  usedMemoryMb: number;
}

/** A command, as the operator named it: a path to run as it is, or a command line for /bin/sh. */
export interface GpuCommand {
  file: string;
  args: string[];
  /** As a person would name it, in errors. */
  display: string;
}

/** The discovery command: QWEX_GPU_DISCOVERY, or nvidia-smi's inventory query. */
export function discoveryCommand(env: NodeJS.ProcessEnv = process.env): GpuCommand {
  return configured(env.QWEX_GPU_DISCOVERY) ?? { file: 'nvidia-smi', args: INVENTORY_QUERY, display: 'nvidia-smi' };
}

/** The command that lists compute processes: QWEX_GPU_PROCESSES, or nvidia-smi's query. */
export function processesCommand(env: NodeJS.ProcessEnv = process.env): GpuCommand {
  return configured(env.QWEX_GPU_PROCESSES) ?? { file: 'nvidia-smi', args: PROCESSES_QUERY, display: 'nvidia-smi --query-compute-apps' };
}

function configured(value: string | undefined): GpuCommand | undefined {
  const text = value?.trim();
  if (!text) return undefined;
  // A path to a program runs as it is (spaces and all); anything else is a command line the operator wrote.
  if (isFile(text)) return { file: text, args: [], display: text };
  return { file: '/bin/sh', args: ['-c', text], display: text };
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false; // not a path to a file: a command line
  }
}

/** Lists the GPUs. Throws QwexError with the command's own words when it fails (no driver, not installed). */
export async function discoverGpus(command: GpuCommand = discoveryCommand()): Promise<Gpu[]> {
  return parseInventory(await call(command), command.display);
}

/** The compute processes on every GPU. Throws like discoverGpus. */
export async function listGpuProcesses(command: GpuCommand = processesCommand()): Promise<GpuProcess[]> {
  return parseProcesses(await call(command));
}

function call(command: GpuCommand): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command.file, command.args, { timeout: CALL_TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const code = (error as { code?: unknown }).code;
      const words = firstLines(`${stderr}\n${stdout}`);
      let message: string;
      if (code === 'ENOENT') message = `${command.display} was not found`;
      else if (error.killed) message = `${command.display} did not answer within ${CALL_TIMEOUT_MS / 1000} s`;
      // /bin/sh says "not found" itself (exit 127) for a command line naming a missing program: its words are kept.
      else message = `${command.display} failed${typeof code === 'number' ? ` (exit ${code})` : ''}${words ? `: ${words}` : ''}`;
      reject(new QwexError(ErrorCode.BackendUnavailable, message));
    });
  });
}

function firstLines(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .slice(0, 3)
    .join(' ')
    .slice(0, 500);
}

/**
 * `index, uuid, name, memory.total, memory.used[, utilization.gpu]` per
 * line (csv,noheader,nounits). A discovery command that lists MIG devices
 * gives each its own line, index and MIG UUID.
 */
export function parseInventory(text: string, source: string): Gpu[] {
  const gpus: Gpu[] = [];
  for (const [n, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    const cells = line.split(',').map((c) => c.trim());
    const [index, uuid, name, total, used, utilization] = cells;
    if (cells.length < 5 || !/^\d+$/.test(index ?? '') || !uuid || /\s/.test(uuid)) {
      throw new QwexError(ErrorCode.BackendUnavailable, `${source} printed line ${n + 1} as "${line.trim().slice(0, 200)}", not "index, uuid, name, memory.total, memory.used"`, {
        hint: 'it must print what nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader,nounits prints',
      });
    }
    const util = number(utilization);
    gpus.push({
      index: Number(index),
      uuid,
      name: name ?? '',
      memoryTotalMb: number(total) ?? 0,
      memoryUsedMb: number(used) ?? 0,
      ...(util === undefined ? {} : { utilizationPercent: util }),
    });
  }
  if (new Set(gpus.map((g) => g.uuid)).size !== gpus.length) {
    throw new QwexError(ErrorCode.BackendUnavailable, `${source} listed a GPU UUID twice`);
  }
  return gpus;
}

/** `gpu_uuid, pid, used_memory` per line; lines it cannot read (a process that went away: [N/A]) are skipped. */
export function parseProcesses(text: string): GpuProcess[] {
  const out: GpuProcess[] = [];
  for (const line of text.split('\n')) {
    const [gpuUuid, pid, used] = line.split(',').map((c) => c.trim());
    if (!gpuUuid || !/^\d+$/.test(pid ?? '')) continue;
    out.push({ gpuUuid, pid: Number(pid), usedMemoryMb: number(used) ?? 0 });
  }
  return out;
}

/** "81559" -> 81559; "[N/A]", "[Not Supported]", "" -> undefined. */
function number(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d+(\.\d+)?$/.test(text)) return undefined;
  return Number(text);
}
