import { loadConfig } from '../config/config.js';
import type { Run } from '../run/model.js';
import { readNextAttempt } from './attempts.js';
import { recipeVersion } from './definition.js';

/**
 * What a look at one run adds for runs of named jobs and retried runs: the
 * job's version in the project's configuration now (null when it is no
 * longer defined; absent when the configuration cannot be read) and the
 * attempt that followed this one. The same for qwexd's run.get and direct mode.
 */
export async function runExtras(run: Run, dir: string): Promise<{ recipeNow?: { version: string | null; changed: boolean }; nextAttempt?: string }> {
  const next = run.job.retry ? readNextAttempt(dir) : undefined;
  let recipeNow: { version: string | null; changed: boolean } | undefined;
  if (run.job.recipe) {
    try {
      const { config } = await loadConfig(run.project);
      const defined = config.jobs[run.job.recipe.name];
      const version = defined ? recipeVersion(defined.value, config) : null;
      recipeNow = { version, changed: version !== run.job.recipe.version };
    } catch {
      // a configuration that cannot be read says nothing about the recipe
    }
  }
  return { ...(recipeNow ? { recipeNow } : {}), ...(next ? { nextAttempt: next } : {}) };
}
