import { createHash } from 'node:crypto';
import { createWriteStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { CloudClient } from '../../cloud/client.js';
import { errnoCode } from '../../errors.js';
import { writeJsonAtomic } from '../../fs-atomic.js';
import { RunFiles } from '../../paths.js';
import type { ArtifactManifest } from '../../workspace/artifacts.js';

/** A path as the server lists it: relative, '/'-separated, with no empty, '.' or '..' part. */
function isSafePath(path: string): boolean {
  return path.length > 0 && path.length <= 4096 && !path.includes('\0') && !path.includes('\\') && path.split('/').every((p) => p !== '' && p !== '.' && p !== '..');
}

/**
 * Brings a server run's artifacts home: each listed file is downloaded into
 * the run directory's files/ (keeping its path), its sha256 and size
 * checked against the listing, and artifacts.json written as a local
 * capture writes it. A file that is refused (an unsafe path, a wrong hash)
 * is listed as skipped with why; nothing unchecked is kept.
 */
export async function downloadArtifacts(client: CloudClient, serverRunId: string, target: { runId: string; runDir: string }): Promise<ArtifactManifest> {
  const list = await client.artifacts(serverRunId);
  const manifest: ArtifactManifest = { runId: target.runId, capturedAt: new Date().toISOString(), files: [], skipped: [...list.skipped], totalBytes: 0 };
  if (list.error !== null) manifest.error = list.error;
  const filesDir = join(target.runDir, RunFiles.files);
  try {
    for (const entry of list.artifacts) {
      if (!isSafePath(entry.path)) {
        manifest.skipped.push({ path: entry.path, reason: 'the server listed a path outside the run directory' });
        continue;
      }
      const dest = join(filesDir, ...entry.path.split('/'));
      const partial = `${dest}.qwex-part`;
      mkdirSync(dirname(dest), { recursive: true });
      const hash = createHash('sha256');
      let size = 0;
      await pipeline(
        await client.artifact(serverRunId, entry.path),
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            hash.update(chunk);
            size += chunk.length;
            yield chunk;
          }
        },
        createWriteStream(partial, { mode: 0o644 }),
      );
      const sha256 = hash.digest('hex');
      if (sha256 !== entry.sha256 || size !== entry.size) {
        rmSync(partial, { force: true });
        manifest.skipped.push({ path: entry.path, reason: `the download did not match the server's listing (sha256 ${sha256.slice(0, 12)}…, ${size} bytes)` });
        continue;
      }
      renameSync(partial, dest);
      manifest.files.push({ path: entry.path, size, sha256 });
      manifest.totalBytes += size;
    }
  } catch (error) {
    manifest.error = errnoCode(error) === 'ENOSPC'
      ? `no space left on device while downloading artifacts; ${manifest.files.length} file(s) were downloaded before it`
      : `artifacts could not be downloaded: ${(error as Error).message}`;
  }
  manifest.capturedAt = new Date().toISOString();
  try {
    writeJsonAtomic(join(target.runDir, RunFiles.artifacts), manifest, 'file');
  } catch (error) {
    manifest.error ??= `cannot write artifacts.json: ${(error as Error).message}`;
  }
  return manifest;
}
