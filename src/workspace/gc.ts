import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
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
    } catch {
      // a run directory that is gone references nothing
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
      } catch {
        // unreadable manifest: its objects are not protected by it
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
        // gone already
      }
      rmSync(path, { force: true });
      report.objectsRemoved++;
    }
  }
  return report;
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function young(path: string, now: number): boolean {
  try {
    return now - statSync(path).mtimeMs < GC_GRACE_MS;
  } catch {
    return false;
  }
}
