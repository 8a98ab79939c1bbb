import { BACKENDS, backendDescriptor } from '../../src/backends/registry.js';
import { loadConfig } from '../../src/config/config.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import type { Context } from '../context.js';
import run, { type RunOptions } from './run.js';

/**
 * `qwex batch COMMAND`: "run this on another machine and stream the output
 * back". It is `qwex run` (the same options, the same code) with the backend
 * set to the configured remote one: --backend if given, else `backend:` of
 * the configuration when it is remote, else the one remote backend that has
 * a section under `backends:`.
 */
export default async function batch(ctx: Context, args: string[], options: RunOptions): Promise<number> {
  return run(ctx, args, { ...options, backend: await remoteBackend(ctx, options.backend) });
}

export async function remoteBackend(ctx: Context, flag: string | undefined): Promise<string> {
  const remote = BACKENDS.filter((b) => b.traits.remote).map((b) => b.name);
  if (flag !== undefined) {
    if (!backendDescriptor(flag).traits.remote) {
      throw new QwexError(ErrorCode.Usage, `qwex batch runs on another machine, and the ${flag} backend runs here`, { hint: `use qwex run -b ${flag}, or a remote backend: ${remote.join(', ')}` });
    }
    return flag;
  }
  const { config } = await loadConfig(ctx.project);
  if (remote.includes(config.backend)) return config.backend;
  const configured = remote.filter((name) => config.backends[name] !== undefined);
  if (configured.length === 1) return configured[0]!;
  const hint = configured.length === 0
    ? `configure one in qwex.yaml (\`qwex init\` writes one with what it finds), e.g. backends: { ssh: { host: gpu-box } }, or pass -b NAME (${remote.join(', ')})`
    : `pass -b NAME to pick one of ${configured.join(', ')}, or set backend: in qwex.yaml`;
  throw new QwexError(ErrorCode.Usage, configured.length === 0 ? 'no remote backend is configured for qwex batch' : `more than one remote backend is configured (${configured.join(', ')})`, { hint });
}
