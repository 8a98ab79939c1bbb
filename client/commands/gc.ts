import { collectGarbage } from '../../src/workspace/gc.js';
import { ContentStore } from '../../src/workspace/snapshot.js';
import type { Context } from '../context.js';
import { formatBytes } from '../render.js';

/** `qwex gc`: remove snapshot objects no run references. */
export default async function gc(ctx: Context, options: { json?: boolean }): Promise<number> {
  const report = collectGarbage(new ContentStore(), ctx.store.runIndex());
  process.stdout.write(
    options.json
      ? `${JSON.stringify(report, null, 2)}\n`
      : `removed ${report.objectsRemoved} object(s) and ${report.manifestsRemoved} snapshot(s), freed ${formatBytes(report.bytesFreed)}; kept ${report.objectsKept} object(s)\n`,
  );
  return 0;
}
