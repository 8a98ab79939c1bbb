import { writeFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, QwexError } from '../errors.js';
import { newRunId } from '../new-run-id.js';
import { RunFiles, runDir as runDirOf } from '../paths.js';
import type { RunStore } from '../store/run-store.js';
import { VERSION } from '../version.js';
import type { Job, Provenance, Run } from './model.js';

export interface CreateOptions {
  /** Who starts the runs: `direct` (a monitor, at once) or `qwexd` (its queue). */
  supervisor: 'direct' | 'qwexd';
  /** Saved (0600) as the environment the commands start from, for runs started later in another process. */
  baseEnv?: Record<string, string>;
  provenance?: readonly (Provenance | undefined)[];
  /** The runs' ids, chosen beforehand (an idempotent submission); new ones otherwise. */
  ids?: readonly string[];
}

/**
 * Records pending runs without starting them, in order (ids ascend),
 * indexed in one transaction. The records are on disk before this returns,
 * even when indexing fails (the index is a cache).
 */
export function createRuns(store: RunStore, jobs: readonly Job[], project: string, options: CreateOptions): { run: Run; dir: string }[] {
  const metadata = { host: hostname(), user: safeUser(), qwexVersion: VERSION };
  const createdAt = new Date().toISOString();
  const runs: Run[] = jobs.map((job, i) => ({
    version: 1,
    id: options.ids?.[i] ?? newRunId(),
    project,
    job,
    status: 'pending',
    createdAt,
    exitCode: null,
    signal: null,
    backend: { name: job.backend },
    supervisor: options.supervisor,
    ...(options.provenance?.[i] ? { provenance: options.provenance[i] } : {}),
    metadata,
  }));
  const env = options.baseEnv === undefined ? [] : [{ name: RunFiles.env, content: `${JSON.stringify(options.baseEnv)}\n` }];
  let created: { run: Run; runDir: string }[];
  try {
    created = store.createMany(runs, env);
  } catch (error) {
    if (!(error instanceof QwexError) || error.code !== ErrorCode.IndexError) throw error;
    created = runs.map((run) => ({ run, runDir: runDirOf(project, run.id) }));
  }
  for (const { runDir: dir } of created) {
    for (const name of [RunFiles.stdout, RunFiles.stderr]) {
      try {
        writeFileSync(join(dir, name), '', { flag: 'a', mode: 0o600 });
      } catch (error) {
        throw new QwexError(ErrorCode.StateUnwritable, `cannot create ${join(dir, name)}: ${(error as Error).message}`, { cause: error });
      }
    }
  }
  return created.map(({ run, runDir }) => ({ run, dir: runDir }));
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry for this uid (a container running as an arbitrary uid): the uid names the user.
    return String(process.getuid?.() ?? 'unknown');
  }
}
