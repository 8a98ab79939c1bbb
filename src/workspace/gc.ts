import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, isReadFailure } from '../errors.js';
import type { RunIndex } from '../store/run-index.js';
import { readRunRecord } from '../store/run-record.js';
import type { ContentStore } from './snapshot.js';

/** Objects and manifests younger than this are kept: a snapshot being taken right now is not referenced by a run yet. */
export const GC_GRACE_MS = 60 * 60 * 1000;

export interface GcReport {
  manifestsKept: number;
  manifestsRemoved: number;
  objectsKept: number;
  objectsRemoved: number;
  bytesFreed: number;
}

/**
 * Removes store objects and manifests that no run in the index references
 * (every run qwex knows is kept, so this frees what runs no longer listed
 * used, and snapshots that never became runs). Recent files are spared.
 */
export function collectGarbage(store: ContentStore, index: RunIndex, now = Date.now()): GcReport {
  const manifests = new Set<string>();
  for (const row of index.list({})) {
    try {
      const id = readRunRecord(row.runDir).job.workspace?.manifest;
      if (id) manifests.add(id);
    } catch (error) {
      // A run directory that is gone, or a record no qwex can parse, references nothing. A record that cannot be read
      // now (EACCES, EIO) may reference a snapshot: the collection stops rather than remove it.
      if (isReadFailure(error)) throw error;
    }
  }
  const report: GcReport = { manifestsKept: 0, manifestsRemoved: 0, objectsKept: 0, objectsRemoved: 0, bytesFreed: 0 };
  const referenced = new Set<string>();
  const manifestDir = join(store.root, 'manifests');
  for (const name of list(manifestDir)) {
    const id = name.replace(/\.json$/, '');
    const path = join(manifestDir, name);
    if (manifests.has(id) || young(path, now)) {
      report.manifestsKept++;
      try {
        for (const file of store.readManifest(id).files) referenced.add(file.sha256);
      } catch (error) {
        // Removed meanwhile, or torn: its objects are not protected by it. Not readable now: they may be needed, so stop.
        if (isReadFailure(error)) throw error;
      }
    } else {
      rmSync(path, { force: true });
      report.manifestsRemoved++;
    }
  }
  const objectsDir = join(store.root, 'objects');
  for (const prefix of list(objectsDir)) {
    for (const rest of list(join(objectsDir, prefix))) {
      const path = join(objectsDir, prefix, rest);
      if (referenced.has(prefix + rest) || young(path, now)) {
        report.objectsKept++;
        continue;
      }
      try {
        report.bytesFreed += statSync(path).size;
      } catch {
        // Gone already; any other failure is the removal's below to report: this is only the count of bytes.
      }
      rmSync(path, { force: true });
      report.objectsRemoved++;
    }
  }
  return report;
}

/**
 * A directory's entries; none when it does not exist yet (or is a stray file). One that cannot be read stops the
 * collection: an unlisted manifest would leave the objects it references unprotected.
 */
function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw error;
  }
}

function young(path: string, now: number): boolean {
  try {
    return now - statSync(path).mtimeMs < GC_GRACE_MS;
  } catch {
    return false; // gone already (removing it again is a no-op), or not ours to stat: the removal reports that
  }
}
