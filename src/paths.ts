import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

/**
 * Where things live. Everything here is computed, never created: the owner
 * that writes a directory creates it.
 */

/** The user's state directory (the SQLite index, daemon logs): $QWEX_STATE_DIR, else XDG. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.QWEX_STATE_DIR) return resolve(env.QWEX_STATE_DIR);
  const base = env.XDG_STATE_HOME ? resolve(env.XDG_STATE_HOME) : join(homedir(), '.local', 'state');
  return join(base, 'qwex');
}

export function indexPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(stateDir(env), 'index.db');
}

export const PROJECT_CONFIG_FILE = 'qwex.yaml';
export const QWEX_DIR = '.qwex';
export const LOCAL_CONFIG_FILE = join(QWEX_DIR, 'config.yaml');

/**
 * The project root for a working directory: $QWEX_PROJECT if set, else the
 * nearest directory upwards holding `qwex.yaml`, `.qwex/` or `.git`, else the
 * working directory itself (so a first `qwex run` anywhere just works).
 */
export function findProjectRoot(cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  if (env.QWEX_PROJECT) return resolve(env.QWEX_PROJECT);
  const start = resolve(cwd);
  const home = homedir();
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, PROJECT_CONFIG_FILE)) || isDir(join(dir, QWEX_DIR)) || existsSync(join(dir, '.git'))) {
      // The home directory's own ~/.qwex is not a project marker for everything beneath it.
      if (!(dir === home && dir !== start && !existsSync(join(dir, PROJECT_CONFIG_FILE)) && !existsSync(join(dir, '.git')))) return dir;
    }
    if (dirname(dir) === dir) return start;
  }
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    // Not there, or not reachable (EACCES): either way not a project marker.
    return false;
  }
}

export function runsDir(projectRoot: string): string {
  return join(projectRoot, QWEX_DIR, 'runs');
}

export function runDir(projectRoot: string, id: string): string {
  return join(runsDir(projectRoot), id);
}

/** File names inside a run directory. */
export const RunFiles = {
  record: 'run.json',
  stdout: 'stdout.log',
  stderr: 'stderr.log',
  artifacts: 'artifacts.json',
  files: 'files',
  cancelRequest: 'cancel-request.json',
  /**
   * Who supervises the run (pid and start time): created exclusively by the
   * first supervisor (or by a cancel of a run nobody started), replaced only
   * by whoever takes over from a dead holder. The holder is the run's one writer.
   */
  claim: 'claim.json',
  /** The submitter's environment, for runs started later by qwexd (0600); removed once the run has started. */
  env: 'env.json',
  /** A direct-mode monitor's own diagnostics. */
  monitorLog: 'monitor.log',
  /** Fingerprints of the watched files before the command started (for changed-only capture). */
  baseline: 'baseline.json',
  /** Written by the local backend's shim before the command runs: its pid and the command's. */
  shim: 'shim.json',
  /** Written by the local backend's shim when the command ends: how it ended. */
  exit: 'exit.json',
  /** CPU and memory of the run's process tree over time, one JSON object per line (see run/usage-tracker.ts). */
  usage: 'usage.jsonl',
  /** The run's copy of its workspace while it is being made; renamed to workspace/ once complete. */
  workspacePartial: '.workspace.partial',
} as const;

/** Where a local run's shim writes the exit status when the run directory cannot take it (a full disk): the runtime directory, another filesystem. */
export function exitFallbackPath(runId: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(runtimeDir(env), 'exits', `${runId}.json`);
}

/**
 * The per-user runtime directory holding qwexd's socket and lock:
 * $QWEX_RUNTIME_DIR, else $XDG_RUNTIME_DIR/qwex, else /tmp/qwex-UID
 * (created 0700 and checked to be ours before use).
 */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.QWEX_RUNTIME_DIR) return resolve(env.QWEX_RUNTIME_DIR);
  if (env.XDG_RUNTIME_DIR) return join(resolve(env.XDG_RUNTIME_DIR), 'qwex');
  return join('/tmp', `qwex-${process.getuid?.() ?? 'user'}`);
}

export function socketPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(runtimeDir(env), 'qwexd.sock');
}

/** Unix socket paths are limited by sockaddr_un.sun_path: 108 bytes on Linux, 104 on macOS, NUL included. */
export function maxSocketPathBytes(platform: NodeJS.Platform = process.platform): number {
  return platform === 'linux' ? 107 : 103;
}

export function daemonLogPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(stateDir(env), 'qwexd.log');
}
