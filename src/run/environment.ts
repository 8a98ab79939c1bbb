import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';
import { applyGpuEnvironment } from '../gpu/environment.js';
import { RunFiles } from '../paths.js';
import type { Run } from './model.js';

/**
 * The command's environment: the submitter's (saved with the run when it
 * starts later in another process, else this process's), the job's, and
 * qwex's own variables (the GPUs it holds among them). Throws when the run
 * cannot be given what it asked for (GPUs without qwexd).
 */
export function runEnvironment(run: Run, dir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(readBaseEnv(dir) ?? process.env)) {
    if (value !== undefined && !name.startsWith('QWEX_MONITOR_')) env[name] = value;
  }
  Object.assign(env, run.job.env);
  // Output goes to a file, where Python would otherwise buffer it and live output would lag.
  env.PYTHONUNBUFFERED ??= '1';
  env.QWEX_RUN_ID = run.id;
  env.QWEX_RUN_DIR = dir;
  applyGpuEnvironment(run, env);
  return env;
}

/** The submitter's environment saved with the run (0600), if it was submitted to start later elsewhere. */
function readBaseEnv(dir: string): Record<string, string> | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, RunFiles.env), 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  return JSON.parse(text) as Record<string, string>;
}

/**
 * Forgets the submitter's environment once the run has started: it may hold
 * secrets, and nothing needs it afterwards (a supervisor that takes over
 * adopts the command, it does not start it again).
 */
export function forgetBaseEnv(dir: string): void {
  rmSync(join(dir, RunFiles.env), { force: true });
}
