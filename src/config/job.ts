import { isAbsolute, resolve } from 'node:path';
import { commandSpec } from './command.js';
import type { QwexConfig } from './config.js';
import { definedOnly, parseGpus, type ContainerSpec } from './container.js';
import { BACKENDS, backendDescriptor, backendsWhere, type BackendDescriptor } from '../backends/registry.js';
import { ErrorCode, QwexError } from '../errors.js';
import { resolveNotify } from '../notify/resolve.js';
import type { Job } from '../run/model.js';

/**
 * What a caller asks for (a CLI line, an NDJSON line, an SDK call), before
 * the project's configuration fills in the rest.
 */
export interface JobSpec {
  /** argv, or one command line (run by /bin/sh -c when it has shell syntax). */
  command: string | string[];
  /** Force /bin/sh -c. */
  shell?: boolean;
  /** Working directory, relative to the caller's (default: the caller's). */
  cwd?: string;
  env?: Record<string, string>;
  name?: string;
  backend?: string;
  /** Artifact directories for this job (default: the config's). */
  watch?: string[];
  timeoutMs?: number;
  killGraceMs?: number;
  /** The host of an ssh run (an alias from qwex.yaml or ~/.ssh/config); over backends.ssh.host. */
  host?: string;
  /** Image, resources and the rest for container backends; over the config's `backends.<name>`. Mount sources resolve against `cwd`. */
  container?: ContainerSpec;
  /**
   * GPUs: a count, `all`, or device ids (`device=0,1`). A container's go to
   * its engine (as `container.gpus`); a backend that takes them itself (the
   * `gpus` option key) gets them from qwexd's ledger. Over the config's `backends.<name>.gpus`.
   */
  gpus?: string | number;
  /** Where in which cluster a Kubernetes run goes; over the config's `backends.<name>`. */
  cluster?: ClusterSpec;
  /** Other options of the backend (keys of its descriptor's `optionKeys`), as its flags set them. */
  options?: Record<string, unknown>;
  /** Notification targets asked for besides the configuration's (`--notify`: a target's name, a URL, mailto:ADDRESS). */
  notify?: string[];
}

export interface ClusterSpec {
  context?: string;
  namespace?: string;
  queue?: string;
  /** false: run the image as it is, without sending the workspace. */
  sync?: boolean;
}

/** Resolves a spec against the configuration into the Job recorded in run.json. Throws QwexError on bad input. */
export function buildJob(spec: JobSpec, config: QwexConfig, callerCwd: string, project: string = callerCwd): Job {
  const args = typeof spec.command === 'string' ? [spec.command] : spec.command;
  if (!Array.isArray(args) || args.length === 0 || args.some((a) => typeof a !== 'string') || args[0] === '') {
    throw new QwexError(ErrorCode.Usage, 'command: expected a non-empty string or array of strings');
  }
  const backend = backendDescriptor(spec.backend ?? config.backend);
  for (const dir of spec.watch ?? []) {
    if (isAbsolute(dir) || dir.split('/').includes('..')) {
      throw new QwexError(ErrorCode.Usage, `watch: "${dir}" is outside the working directory`, {
        hint: 'name directories relative to where the command runs, without ".."',
      });
    }
  }
  const cwd = spec.cwd === undefined ? callerCwd : resolve(callerCwd, spec.cwd);
  const options = backendOptionsOf(spec);
  for (const key of Object.keys(options)) {
    if (!backend.optionKeys.includes(key)) throw notAnOptionOf(key, backend.name);
  }
  const { container, gpus } = gpusOf(spec, backend, config);
  if (container !== undefined && !backend.traits.container) {
    throw new QwexError(ErrorCode.Usage, `image, cpus, memory, gpus and the other container options need a container backend, not "${backend.name}"`, {
      hint: `add --backend ${backendsWhere((b) => b.traits.container)[0] ?? 'NAME'}`,
    });
  }
  const resolved = backend.resolveJob({ config: config.backends[backend.name] ?? {}, options, container, cwd, project });
  const notify = resolveNotify(config.notify, spec.notify);
  return {
    ...commandSpec(args, { shell: spec.shell === true }),
    cwd,
    env: { ...config.env, ...spec.env },
    backend: backend.name,
    backendOptions: resolved.backendOptions,
    artifacts: { ...config.artifacts, ...(spec.watch === undefined ? {} : { watch: spec.watch }) },
    killGraceMs: spec.killGraceMs ?? config.killGraceSeconds * 1000,
    ...(spec.timeoutMs === undefined ? {} : { timeoutMs: spec.timeoutMs }),
    ...(spec.name === undefined ? {} : { name: spec.name }),
    ...(resolved.container === undefined ? {} : { container: resolved.container }),
    ...(gpus === undefined ? {} : { gpus }),
    ...(gpus === undefined && backend.optionKeys.includes('gpus') && config.unrequestedGpus === 'all' ? { allGpusVisible: true } : {}),
    ...(notify === undefined ? {} : { notify }),
  };
}

/**
 * Where a job's GPU request goes: a container backend's into its container
 * settings; a backend that takes GPUs itself (its descriptor lists the
 * `gpus` option) into `job.gpus`, from the spec or else its config section.
 */
function gpusOf(spec: JobSpec, backend: BackendDescriptor, config: QwexConfig): { container: ContainerSpec | undefined; gpus: Job['gpus'] } {
  let container: ContainerSpec | undefined = spec.container !== undefined && Object.values(spec.container).some((v) => v !== undefined) ? spec.container : undefined;
  const asked = spec.gpus ?? container?.gpus ?? (spec.options?.gpus as string | number | undefined);
  if (backend.traits.container) {
    if (spec.gpus !== undefined) container = { ...container, gpus: spec.gpus };
    return { container, gpus: undefined };
  }
  if (container !== undefined) {
    const { gpus: _gpus, ...rest } = container;
    // What is left may be empty shells (`qwex submit` merges an `env: {}` into every job's container settings).
    container = Object.values(rest).some((v) => v !== undefined && !(typeof v === 'object' && Object.keys(v).length === 0)) ? rest : undefined;
  }
  const takesGpus = backend.optionKeys.includes('gpus');
  if (asked !== undefined && !takesGpus) {
    const takers = BACKENDS.filter((b) => b.traits.container || b.optionKeys.includes('gpus')).map((b) => b.name);
    throw new QwexError(ErrorCode.Usage, `--gpus is for the ${takers.join(', ')} backends, not "${backend.name}"`, { hint: `add --backend ${takers[0] ?? 'NAME'}` });
  }
  const configured = takesGpus ? (config.backends[backend.name] as { gpus?: string | number } | undefined)?.gpus : undefined;
  const value = asked ?? configured;
  if (value === undefined) return { container, gpus: undefined };
  return { container, gpus: parseGpus(value, asked === undefined ? `backends.${backend.name}` : '--gpus') };
}

/** The backend options a spec sets: `host`, and the keys of `cluster` (context, namespace, queue, sync). */
function backendOptionsOf(spec: JobSpec): Record<string, unknown> {
  const { gpus: _gpus, ...options } = spec.options ?? {};
  // `gpus` is handled by gpusOf for every backend.
  return definedOnly({ ...options, ...(spec.host === undefined ? {} : { host: spec.host }), ...spec.cluster });
}

/** "--host is for the ssh backend, not "local"", naming the backends that take the option. */
function notAnOptionOf(key: string, backend: string): QwexError {
  const takers = BACKENDS.filter((b) => b.optionKeys.includes(key));
  const flag = takers.flatMap((b) => b.flags).find((f) => f.key === key)?.flags.split(' ')[0] ?? key;
  if (takers.length === 0) return new QwexError(ErrorCode.Usage, `${flag} is not an option of any backend`);
  const names = takers.map((b) => b.name);
  const list = names.length === 1 ? `the ${names[0]} backend` : `the ${names.slice(0, -1).join(', ')} and ${names.at(-1)} backends`;
  return new QwexError(ErrorCode.Usage, `${flag} is for ${list}, not "${backend}"`, { hint: `add --backend ${names[0]}` });
}

/**
 * Parses a batch file: one job per line, either a shell command line or an
 * NDJSON job spec (a line starting with "{"). Blank lines and lines starting
 * with "#" are skipped. Errors name the line.
 */
export function parseJobLines(text: string, source: string): JobSpec[] {
  const specs: JobSpec[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const where = `${source}:${i + 1}`;
    if (!trimmed.startsWith('{')) {
      specs.push({ command: trimmed });
      continue;
    }
    let value: unknown;
    try {
      value = JSON.parse(trimmed);
    } catch (error) {
      throw new QwexError(ErrorCode.Usage, `${where}: not valid JSON (${(error as Error).message})`, {
        hint: 'each line is a shell command, or a JSON object like {"command": ["python", "train.py"], "name": "a"}',
      });
    }
    specs.push(checkSpec(value, where));
  }
  return specs;
}

const SPEC_KEYS = new Set(['command', 'shell', 'cwd', 'env', 'name', 'backend', 'watch', 'timeoutMs', 'killGraceMs', 'container', 'host', 'cluster', 'gpus', 'notify']);
const CLUSTER_KEYS = new Set(['context', 'namespace', 'queue', 'sync']);
const CONTAINER_KEYS = new Set(['image', 'pull', 'user', 'network', 'cpus', 'memory', 'gpus', 'mounts', 'env']);

function checkSpec(value: unknown, where: string): JobSpec {
  const bad = (what: string): never => {
    throw new QwexError(ErrorCode.Usage, `${where}: ${what}`, {
      hint: `job spec keys: ${[...SPEC_KEYS].join(', ')}`,
    });
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return bad('expected a JSON object');
  const spec = value as Record<string, unknown>;
  for (const key of Object.keys(spec)) if (!SPEC_KEYS.has(key)) bad(`unknown key "${key}"`);
  const command = spec.command;
  if (!(typeof command === 'string' || (Array.isArray(command) && command.every((a) => typeof a === 'string')))) {
    bad('command: expected a string or an array of strings');
  }
  if (spec.shell !== undefined && typeof spec.shell !== 'boolean') bad('shell: expected true or false');
  for (const key of ['cwd', 'name', 'backend', 'host'] as const) {
    if (spec[key] !== undefined && typeof spec[key] !== 'string') bad(`${key}: expected a string`);
  }
  if (spec.env !== undefined && (typeof spec.env !== 'object' || spec.env === null || Object.values(spec.env).some((v) => typeof v !== 'string'))) {
    bad('env: expected an object of strings');
  }
  if (spec.gpus !== undefined && typeof spec.gpus !== 'string' && typeof spec.gpus !== 'number') bad('gpus: expected a number or a string (2, "all", "device=0,1")');
  if (spec.notify !== undefined && !(Array.isArray(spec.notify) && spec.notify.every((t) => typeof t === 'string'))) bad('notify: expected an array of target names or URLs');
  if (spec.watch !== undefined && !(Array.isArray(spec.watch) && spec.watch.every((d) => typeof d === 'string'))) bad('watch: expected an array of strings');
  for (const key of ['timeoutMs', 'killGraceMs'] as const) {
    if (spec[key] !== undefined && !(Number.isInteger(spec[key]) && (spec[key] as number) >= 0)) bad(`${key}: expected a whole number of milliseconds`);
  }
  if (spec.container !== undefined) {
    const c = spec.container as Record<string, unknown>;
    if (typeof c !== 'object' || c === null || Array.isArray(c)) bad('container: expected an object like {"image": "python:3.12-slim"}');
    for (const key of Object.keys(c)) if (!CONTAINER_KEYS.has(key)) bad(`container: unknown key "${key}" (keys: ${[...CONTAINER_KEYS].join(', ')})`);
    for (const key of ['image', 'pull', 'user', 'network'] as const) if (c[key] !== undefined && typeof c[key] !== 'string') bad(`container.${key}: expected a string`);
    for (const key of ['cpus', 'memory', 'gpus'] as const) {
      if (c[key] !== undefined && typeof c[key] !== 'string' && typeof c[key] !== 'number') bad(`container.${key}: expected a number or a string`);
    }
    if (c.mounts !== undefined && !(Array.isArray(c.mounts) && c.mounts.every((m) => typeof m === 'string'))) bad('container.mounts: expected an array of "SRC:DST[:ro]" strings');
    if (c.env !== undefined && (typeof c.env !== 'object' || c.env === null || Object.values(c.env).some((v) => typeof v !== 'string'))) {
      bad('container.env: expected an object of strings');
    }
  }
  if (spec.cluster !== undefined) {
    const c = spec.cluster as Record<string, unknown>;
    if (typeof c !== 'object' || c === null || Array.isArray(c)) bad('cluster: expected an object like {"namespace": "ml", "queue": "gpu"}');
    for (const key of Object.keys(c)) if (!CLUSTER_KEYS.has(key)) bad(`cluster: unknown key "${key}" (keys: ${[...CLUSTER_KEYS].join(', ')})`);
    for (const key of ['context', 'namespace', 'queue'] as const) if (c[key] !== undefined && typeof c[key] !== 'string') bad(`cluster.${key}: expected a string`);
    if (c.sync !== undefined && typeof c.sync !== 'boolean') bad('cluster.sync: expected true or false');
  }
  return spec as unknown as JobSpec;
}

/** The environment a run starts from when qwexd starts it: the submitter's. */
export function submitterEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (value !== undefined) out[name] = value;
  return out;
}
