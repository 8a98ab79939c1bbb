import { backendDescriptor } from '../../src/backends/registry.js';
import { loadConfig } from '../../src/config/config.js';
import { ErrorCode, QwexError, isSecretName } from '../../src/errors.js';
import type { Job, Provenance } from '../../src/run/model.js';
import { prepareWorkspaces } from '../../src/workspace/prepare.js';
import { ContentStore } from '../../src/workspace/snapshot.js';
import type { Context } from '../context.js';
import { foreground } from '../foreground.js';
import { publicRun } from '../render.js';
import { showsProgress } from '../style.js';

interface RerunOptions {
  inPlace?: boolean;
  detach?: boolean;
  json?: boolean;
  quiet?: boolean;
}

/**
 * `qwex rerun RUN`: the run again exactly as it was: its snapshot, command,
 * environment, backend and options. Values of secret-looking variables are
 * taken from this environment, not from the record. `--in-place` runs
 * today's code instead (a new snapshot when the run had one, so that
 * `qwex diff OLD NEW` shows what changed). The new run records `rerunOf`.
 */
export default async function rerun(ctx: Context, prefix: string, options: RerunOptions): Promise<number> {
  const old = ctx.store.read(ctx.resolve(prefix).dir);
  // A rerun stands alone: it is no stage of a workflow, no attempt of a chain, and waits for nothing.
  const { workflow: _workflow, attempt: _attempt, after: _after, workspace, ...rest } = old.job;
  const job: Job = { ...rest, env: secretsFromHere(old.job.env), rerunOf: old.id };
  let provenance: Provenance | undefined;
  if (!options.inPlace) {
    if (!workspace) {
      throw new QwexError(ErrorCode.Usage, `run ${old.id} ran in place: it has no snapshot to replay`, { hint: `rerun it with today's code: qwex rerun --in-place ${prefix}` });
    }
    new ContentStore().readManifest(workspace.manifest); // gone (qwex gc, another machine): say so before anything runs
    job.workspace = workspace;
    provenance = old.provenance ?? { manifest: workspace.manifest };
  } else {
    const { config } = await loadConfig(old.project);
    const snapshot = workspace !== undefined || backendDescriptor(job.backend).traits.remote;
    [provenance] = await prepareWorkspaces([job], old.project, config, snapshot ? 'snapshot' : 'inplace');
  }
  const service = await ctx.service(job.retry ? { startDaemon: (pid) => process.stderr.write(`started qwexd (pid ${pid})\n`) } : {});
  const [submitted] = await service.submit({ project: old.project, jobs: [job], provenance: [provenance] });
  if (options.detach) {
    process.stdout.write(options.json ? `${JSON.stringify(publicRun(submitted!), null, 2)}\n` : `${submitted!.id}\n`);
    return 0;
  }
  return foreground(service, old.project, submitted!, { quiet: options.quiet === true, progress: showsProgress(options) });
}

/** The job's variables, with the values of secret-looking ones from this environment (dropped, with a warning, when unset here). */
function secretsFromHere(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (!isSecretName(name)) {
      out[name] = value;
      continue;
    }
    const here = process.env[name];
    if (here === undefined) process.stderr.write(`qwex: ${name} looks secret and is not set here: the rerun runs without it\n`);
    else out[name] = here;
  }
  return out;
}
