import { loadConfig } from '../../src/config/config.js';
import { recipeVersion, retryPolicy } from '../../src/workflow/definition.js';
import type { Context } from '../context.js';
import { styleFor, table } from '../render.js';

/** `qwex jobs`: the named jobs of qwex.yaml (and .qwex/config.yaml), with their versions and parameters. */
export default async function jobs(ctx: Context, options: { json?: boolean }): Promise<number> {
  const { config } = await loadConfig(ctx.project);
  const list = Object.entries(config.jobs).map(([name, { value, file }]) => {
    const retry = retryPolicy(value);
    return {
      name,
      version: recipeVersion(value, config),
      backend: value.backend ?? config.backend,
      command: value.command ?? null,
      params: Object.fromEntries(Object.entries(value.params ?? {}).map(([k, v]) => [k, String(v)])),
      ...(retry ? { retry } : {}),
      file,
    };
  });
  if (options.json) {
    process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    return 0;
  }
  if (list.length === 0) {
    process.stderr.write('no jobs in qwex.yaml (define them under `jobs:`; see docs/workflows.md)\n');
    return 0;
  }
  const rows = list.map((j) => [
    j.name,
    j.version,
    j.backend,
    Object.entries(j.params).map(([k, v]) => `${k}=${v}`).join(' '),
    j.retry ? String(j.retry.limit) : '',
    Array.isArray(j.command) ? j.command.join(' ') : (j.command ?? ''),
  ]);
  process.stdout.write(`${table(['NAME', 'VERSION', 'BACKEND', 'PARAMS', 'RETRIES', 'COMMAND'], rows, styleFor(process.stdout))}\n`);
  return 0;
}
