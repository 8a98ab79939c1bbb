import type { ContainerSpec } from '../src/config/container.js';
import { BACKENDS } from '../src/backends/registry.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import { RUN_STATUSES, type RunStatus } from '../src/run/model.js';

/** Usage errors: what was wrong and what to type instead; they exit 2. */
function usage(message: string, hint?: string): QwexError {
  return new QwexError(ErrorCode.Usage, message, hint === undefined ? {} : { hint });
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90" (seconds), "500ms", "90s", "5m", "2h", "1d", or "1h30m" -> milliseconds. */
export function parseDuration(text: string, what: string): number {
  const trimmed = text.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const parts = [...trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== trimmed) {
    throw usage(`${what}: "${text}" is not a duration`, 'use a number of seconds or e.g. 500ms, 90s, 5m, 2h, 1h30m');
  }
  return Math.round(parts.reduce((sum, p) => sum + Number(p[1]) * UNITS[p[2]!]!, 0));
}

/** KEY=VALUE pairs; a bare KEY copies the value from this environment (as docker run -e does). */
export function parseEnv(pairs: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const name = eq === -1 ? pair : pair.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw usage(`--env: "${name}" is not a valid environment variable name`, 'use --env NAME=value');
    }
    if (eq === -1) {
      const value = process.env[name];
      if (value === undefined) throw usage(`--env ${name}: ${name} is not set in this environment`, `use --env ${name}=value`);
      env[name] = value;
    } else {
      env[name] = pair.slice(eq + 1);
    }
  }
  return env;
}

/** "out,models" -> ["out", "models"], each a directory inside the working directory. */
export function parseWatch(text: string): string[] {
  const dirs = text.split(',').map((d) => d.trim().replace(/\/+$/, '')).filter((d) => d !== '');
  if (dirs.length === 0) throw usage('--watch: no directory given', 'e.g. --watch out,models');
  for (const dir of dirs) {
    if (dir.startsWith('/') || dir.split('/').includes('..')) {
      throw usage(`--watch: "${dir}" is outside the working directory`, 'name directories relative to where the command runs, without ".."');
    }
  }
  return dirs;
}

export function parseStatuses(text: string): RunStatus[] {
  const statuses = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const status of statuses) {
    if (!(RUN_STATUSES as readonly string[]).includes(status)) {
      throw usage(`--status: unknown status "${status}"`, `statuses are ${RUN_STATUSES.join(', ')}`);
    }
  }
  return statuses as RunStatus[];
}

export function parseCount(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw usage(`${what}: "${text}" is not a whole number`);
  return Number(text);
}

/** The container flags given on the command line (values are checked when the job is built). */
export interface ContainerFlags {
  image?: string;
  pull?: string;
  cpus?: string;
  memory?: string;
  gpus?: string;
  mount: string[];
  network?: string;
  user?: string;
}

export function containerSpec(flags: ContainerFlags): ContainerSpec | undefined {
  const spec: ContainerSpec = {};
  for (const key of ['image', 'pull', 'cpus', 'memory', 'gpus', 'network', 'user'] as const) {
    if (flags[key] !== undefined) spec[key] = flags[key];
  }
  if (flags.mount.length > 0) spec.mounts = flags.mount;
  return Object.keys(spec).length === 0 ? undefined : spec;
}

/**
 * The backends' own flags given on the command line, as run options
 * (`--host gpu` -> {host: 'gpu'}; `--no-sync` -> {sync: false}). Commander
 * sets a `--no-x` flag's key to true when it is absent: only false counts.
 */
export function backendFlagOptions(flags: Record<string, unknown>): Record<string, unknown> | undefined {
  const options: Record<string, unknown> = {};
  for (const flag of BACKENDS.flatMap((b) => b.flags)) {
    const value = flags[flag.key];
    if (value === undefined || (flag.flags.startsWith('--no-') && value !== false)) continue;
    options[flag.key] = value;
  }
  return Object.keys(options).length === 0 ? undefined : options;
}
