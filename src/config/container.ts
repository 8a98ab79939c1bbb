import { isAbsolute, resolve } from 'node:path';
import { ErrorCode, QwexError } from '../errors.js';
import type { z } from 'zod';

type Zod = typeof z;

/**
 * What a run in a container asks for, in one portable shape shared by the
 * container backends (Docker now; Kubernetes later). Values are parsed and
 * checked when the job is built, so a bad value fails before anything runs
 * and the record holds normalised numbers, not strings to re-parse.
 */
export interface ResourceRequirements {
  /** CPU cores, fractions allowed (Docker --cpus, Kubernetes cpu limit). */
  cpus?: number;
  /** Memory limit in bytes. */
  memoryBytes?: number;
  /** GPUs: a count, every GPU ('all'), or specific device ids/UUIDs. */
  gpus?: number | 'all' | string[];
}

export type PullPolicy = 'never' | 'missing' | 'always';
export const PULL_POLICIES: readonly PullPolicy[] = ['never', 'missing', 'always'];

export interface ContainerMount {
  /** Absolute path on the host. */
  source: string;
  /** Absolute path in the container. */
  target: string;
  readonly: boolean;
}

export interface ContainerConfig {
  image: string;
  pull: PullPolicy;
  /** "uid", "uid:gid" or a user name known to the image; unset: the invoking user's uid:gid. */
  user?: string;
  /** A Docker network name or mode (bridge, host, none); unset: the engine's default. */
  network?: string;
  mounts: ContainerMount[];
  /** Variables set in the container (the host's environment is not passed in). */
  env: Record<string, string>;
  resources: ResourceRequirements;
}

/** Where the project (or the run's copy of it) is mounted, and the command's working directory under it. */
export const CONTAINER_WORKSPACE = '/workspace';

/** Values as they come from a flag or a config file, before checking. */
export interface ContainerSpec {
  image?: string;
  pull?: string;
  user?: string;
  network?: string;
  cpus?: string | number;
  memory?: string | number;
  gpus?: string | number;
  mounts?: string[];
  env?: Record<string, string>;
}

/** One source of container settings: the config file or the command line. Mount sources resolve against `root`. */
export interface ContainerLayer {
  spec: ContainerSpec;
  root: string;
  /** Names the source in errors ("backends.NAME", "--backend NAME"). */
  where: string;
}

/**
 * The container settings of a run of `backend`: its section in the
 * configuration (mount sources relative to the project), then the run's own
 * flags or job spec (mount sources relative to its working directory).
 */
export function resolveContainerJob(backend: string, input: { config: Record<string, unknown>; container: ContainerSpec | undefined; cwd: string; project: string }): ContainerConfig {
  return resolveContainerConfig(
    [
      { spec: input.config as ContainerSpec, root: input.project, where: `backends.${backend}` },
      { spec: input.container ?? {}, root: input.cwd, where: `--backend ${backend}` },
    ],
    backend,
  );
}

/** Applies the layers in order (later wins; env merges; mounts add up) and checks every value. */
export function resolveContainerConfig(layers: readonly ContainerLayer[], backend: string): ContainerConfig {
  let spec: ContainerSpec = {};
  const env: Record<string, string> = {};
  const mounts: ContainerMount[] = [];
  let where = 'container';
  for (const layer of layers) {
    spec = { ...spec, ...definedOnly(layer.spec) };
    Object.assign(env, layer.spec.env);
    for (const m of layer.spec.mounts ?? []) mounts.push(parseMount(m, layer.root, layer.where));
    if (Object.values(layer.spec).some((v) => v !== undefined)) where = layer.where;
  }
  if (spec.image === undefined || spec.image.trim() === '') {
    throw invalid(`${where}: no image given for a container run`, `pass --image NAME, or set backends.${backend}.image in qwex.yaml`);
  }
  const pull = spec.pull ?? 'missing';
  if (!(PULL_POLICIES as readonly string[]).includes(pull)) {
    throw invalid(`${where}: pull: "${pull}" is not a pull policy`, `use one of ${PULL_POLICIES.join(', ')}`);
  }
  if (spec.user !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$/.test(spec.user)) {
    throw invalid(`${where}: user: "${spec.user}" is not a user`, 'use a uid, uid:gid, or a user name known to the image');
  }
  return {
    image: spec.image.trim(),
    pull: pull as PullPolicy,
    ...(spec.user === undefined ? {} : { user: spec.user }),
    ...(spec.network === undefined ? {} : { network: spec.network }),
    mounts,
    env,
    resources: parseResources(spec, where),
  };
}

export function parseResources(spec: Pick<ContainerSpec, 'cpus' | 'memory' | 'gpus'>, where: string): ResourceRequirements {
  const out: ResourceRequirements = {};
  if (spec.cpus !== undefined) out.cpus = parseCpus(spec.cpus, where);
  if (spec.memory !== undefined) out.memoryBytes = parseMemory(spec.memory, where);
  if (spec.gpus !== undefined) out.gpus = parseGpus(spec.gpus, where);
  return out;
}

/** "2", "0.5", 1.5 -> cores. */
export function parseCpus(value: string | number, where: string): number {
  const n = typeof value === 'number' ? value : /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isFinite(n) || n <= 0) throw invalid(`${where}: cpus: "${value}" is not a number of CPUs`, 'use a positive number, e.g. 2 or 0.5');
  return n;
}

const MEMORY_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1024, kib: 1024,
  m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4,
};

/** "512m", "2g", "2GiB", "1.5G", 1048576 -> bytes. Units are binary, as Docker reads them. */
export function parseMemory(value: string | number, where: string): number {
  const match = typeof value === 'number' ? null : /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
  const factor = match ? MEMORY_UNITS[match[2]!.toLowerCase()] : undefined;
  const bytes = typeof value === 'number' ? value : match && factor !== undefined ? Math.round(Number(match[1]) * factor) : NaN;
  // Docker refuses limits under 6 MiB; say so here rather than after the run was recorded.
  if (!Number.isInteger(bytes) || bytes < 6 * 1024 ** 2) {
    throw invalid(`${where}: memory: "${value}" is not a memory size of at least 6m`, 'use a number with a unit, e.g. 512m, 2g, 1.5GiB');
  }
  return bytes;
}

/** "all", 2, "2", "0,1", "device=GPU-abc,GPU-def" -> a GPU request. */
export function parseGpus(value: string | number, where: string): ResourceRequirements['gpus'] {
  const text = String(value).trim();
  if (text === 'all') return 'all';
  if (/^\d+$/.test(text) && !text.includes(',')) {
    const n = Number(text);
    if (n > 0) return n;
  }
  const list = text.replace(/^device=/, '').split(',').map((d) => d.trim());
  if (text.startsWith('device=') || text.includes(',')) {
    if (list.length > 0 && list.every((d) => /^[A-Za-z0-9_-]+$/.test(d))) return list;
  }
  throw invalid(`${where}: gpus: "${value}" is not a GPU request`, 'use all, a count (e.g. 2), or device ids (e.g. device=0,1)');
}

/** "SRC:DST" or "SRC:DST:ro|rw"; SRC relative to the project root. */
export function parseMount(text: string, root: string, where: string): ContainerMount {
  const parts = text.split(':');
  const [source, target, mode] = parts;
  if (parts.length < 2 || parts.length > 3 || !source || !target || (mode !== undefined && mode !== 'ro' && mode !== 'rw')) {
    throw invalid(`${where}: mount: "${text}" is not SRC:DST or SRC:DST:ro`, 'e.g. --mount ./data:/data:ro');
  }
  if (!isAbsolute(target)) throw invalid(`${where}: mount: the container path "${target}" is not absolute`, 'e.g. --mount ./data:/data');
  if (target.replace(/\/+$/, '') === CONTAINER_WORKSPACE) {
    throw invalid(`${where}: mount: ${CONTAINER_WORKSPACE} is where qwex mounts the project`, 'mount somewhere else, e.g. /data');
  }
  return { source: resolve(root, source), target, readonly: mode === 'ro' };
}

function invalid(message: string, hint: string): QwexError {
  return new QwexError(ErrorCode.Usage, message, { hint });
}

export function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * The keys of a container backend's section in qwex.yaml (`backends.<name>`)
 * that every container backend shares. Takes zod from the caller, so that
 * descriptors can use it without loading zod themselves.
 */
export function containerConfigShape(z: Zod) {
  return {
    image: z.string().min(1).optional(),
    pull: z.enum(['never', 'missing', 'always']).optional(),
    user: z.string().min(1).optional(),
    cpus: z.union([z.number(), z.string()]).optional(),
    memory: z.union([z.number(), z.string()]).optional(),
    gpus: z.union([z.number(), z.string()]).optional(),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name'), z.string()).optional(),
  };
}
