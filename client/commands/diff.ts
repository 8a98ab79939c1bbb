import { loadConfig } from '../../src/config/config.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { ContentStore, diffManifests, snapshotWorkspace, type Manifest } from '../../src/workspace/snapshot.js';
import type { Context } from '../context.js';

/**
 * `qwex diff RUN [RUN2]`: which files of the code differ between two runs'
 * snapshots, or between a run's snapshot and the working tree now.
 */
export default async function diff(ctx: Context, first: string, second: string | undefined, options: { json?: boolean }): Promise<number> {
  const store = new ContentStore();
  const manifestOf = (prefix: string): Manifest => {
    const run = ctx.store.read(ctx.resolve(prefix).dir);
    const id = run.job.workspace?.manifest;
    if (!id) {
      throw new QwexError(ErrorCode.Usage, `run ${run.id} ran in place: it has no snapshot to compare`, {
        hint: 'runs started with --snapshot (or detached, queued) have one',
      });
    }
    return store.readManifest(id);
  };
  const a = manifestOf(first);
  let b: Manifest;
  if (second === undefined) {
    const { config } = await loadConfig(ctx.project);
    b = await snapshotWorkspace(ctx.project, store, { maxBytes: config.workspaceMaxMb * 1e6 });
  } else {
    b = manifestOf(second);
  }
  const changes = diffManifests(a, b);
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ from: a.id, to: b.id, ...changes }, null, 2)}\n`);
  } else {
    const lines = [...changes.added.map((p) => `A  ${p}`), ...changes.removed.map((p) => `D  ${p}`), ...changes.changed.map((p) => `M  ${p}`)].sort((x, y) =>
      x.slice(3).localeCompare(y.slice(3)),
    );
    process.stdout.write(lines.length ? `${lines.join('\n')}\n` : '');
    if (!lines.length) process.stderr.write('no differences\n');
  }
  return 0;
}
