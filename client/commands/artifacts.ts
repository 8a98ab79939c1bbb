import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { ArtifactManifest } from '../../src/workspace/artifacts.js';
import { errnoCode } from '../../src/errors.js';
import { RunFiles } from '../../src/paths.js';
import type { Context } from '../context.js';
import { formatBytes, styleFor, table } from '../render.js';

export default async function artifacts(ctx: Context, prefix: string, options: { json?: boolean; copyTo?: string }): Promise<number> {
  const { dir } = ctx.resolve(prefix);
  const run = ctx.store.read(dir);
  let manifest: ArtifactManifest | undefined;
  try {
    manifest = JSON.parse(readFileSync(join(dir, RunFiles.artifacts), 'utf8')) as ArtifactManifest;
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error;
  }
  if (options.copyTo !== undefined && manifest) {
    // The files keep their paths under DIR (DIR/out/model.pth); existing files there are replaced.
    const target = resolve(options.copyTo);
    for (const file of manifest.files) {
      const dest = join(target, ...file.path.split('/'));
      mkdirSync(dirname(dest), { recursive: true });
      copyFileSync(join(dir, RunFiles.files, ...file.path.split('/')), dest);
    }
    process.stderr.write(`copied ${manifest.files.length} file(s) to ${target}\n`);
  }
  if (options.json) {
    process.stdout.write(`${JSON.stringify(manifest ?? null, null, 2)}\n`);
    return 0;
  }
  if (!manifest) {
    process.stderr.write(`run ${run.id} has no artifacts yet (${run.status})\n`);
    return 0;
  }
  const style = styleFor(process.stdout);
  if (manifest.files.length > 0) {
    const rows = manifest.files.map((f) => [f.path, formatBytes(f.size), f.sha256.slice(0, 12)]);
    process.stdout.write(`${table(['PATH', 'SIZE', 'SHA256'], rows, style)}\n`);
    process.stderr.write(`captured in ${join(dir, RunFiles.files)}\n`);
  } else {
    process.stderr.write(`run ${run.id} captured no files\n`);
  }
  for (const skipped of manifest.skipped) process.stderr.write(`skipped ${skipped.path}: ${skipped.reason}\n`);
  if (manifest.error) process.stderr.write(`capture error: ${manifest.error}\n`);
  return 0;
}
