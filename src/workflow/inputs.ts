import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';
import { RunFiles } from '../paths.js';
import type { ArtifactManifest } from '../workspace/artifacts.js';
import type { ContentStore, Manifest, ManifestFile } from '../workspace/snapshot.js';

/** Where a stage finds what the stages it needs captured, relative to its working directory. */
export const INPUTS_DIR = 'inputs';

/** A needed stage's run whose captured files become the stage's inputs. */
export interface InputSource {
  stage: string;
  runDir: string;
}

/**
 * The workspace manifest of a stage that needs others: the workflow's
 * snapshot plus `<cwd>/inputs/<stage>/<path>` for every file each needed
 * stage captured (artifacts.json has their sha256: they are added to the
 * content store under it). Every backend then gets them the way it gets the
 * workspace: the local copy, the Docker bind mount of that copy, the ssh
 * sync, the Kubernetes upload. Returns the new manifest's id.
 */
export async function inputsManifest(store: ContentStore, snapshot: string, cwd: string, sources: readonly InputSource[]): Promise<string> {
  const base = store.readManifest(snapshot);
  const root = cwd === '' ? INPUTS_DIR : `${cwd}/${INPUTS_DIR}`;
  // What the project itself has at inputs/<stage> gives way to the stage's real inputs.
  const prefixes = sources.map((s) => `${root}/${s.stage}`);
  const kept = (path: string): boolean => !prefixes.some((p) => path === p || path.startsWith(`${p}/`));
  const files: ManifestFile[] = base.files.filter((f) => kept(f.path));
  for (const source of sources) {
    const captured = readArtifacts(source.runDir);
    for (const file of captured?.files ?? []) {
      const from = join(source.runDir, RunFiles.files, ...file.path.split('/'));
      await store.put(from, file.sha256);
      files.push({ path: `${root}/${source.stage}/${file.path}`, size: file.size, mode: statSync(from).mode & 0o777, sha256: file.sha256 });
    }
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const body = { files, symlinks: base.symlinks.filter((l) => kept(l.path)), linked: base.linked.filter(kept) };
  const manifest: Manifest = {
    id: createHash('sha256').update(JSON.stringify(body)).digest('hex'),
    project: base.project,
    createdAt: new Date().toISOString(),
    ...body,
    totalBytes: files.reduce((sum, f) => sum + f.size, 0),
  };
  store.writeManifest(manifest);
  return manifest.id;
}

type Prepared = { state: 'preparing' } | { state: 'ready'; manifest: string } | { state: 'failed'; message: string };

/**
 * The inputs of stages about to start, by run id: made once, in the
 * background (files are copied into the content store), after which
 * `done` is called so that the queue asks again.
 */
export class InputsCache {
  private readonly prepared = new Map<string, Prepared>();

  constructor(
    private readonly store: ContentStore,
    private readonly done: (runId: string, error?: Error) => void,
  ) {}

  /** The manifest when it is ready; starts making it the first time it is asked for. Throws what making it threw. */
  get(runId: string, make: () => { snapshot: string; cwd: string; sources: InputSource[] }): string | undefined {
    const prepared = this.prepared.get(runId);
    if (prepared?.state === 'ready') return prepared.manifest;
    if (prepared?.state === 'failed') throw new Error(prepared.message);
    if (prepared === undefined) {
      this.prepared.set(runId, { state: 'preparing' });
      const { snapshot, cwd, sources } = make();
      inputsManifest(this.store, snapshot, cwd, sources).then(
        (manifest) => {
          this.prepared.set(runId, { state: 'ready', manifest });
          this.done(runId);
        },
        (error: unknown) => {
          this.prepared.set(runId, { state: 'failed', message: (error as Error).message });
          this.done(runId, error as Error);
        },
      );
    }
    return undefined;
  }

  forget(runId: string): void {
    this.prepared.delete(runId);
  }
}

function readArtifacts(runDir: string): ArtifactManifest | undefined {
  try {
    return JSON.parse(readFileSync(join(runDir, RunFiles.artifacts), 'utf8')) as ArtifactManifest;
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined; // it captured nothing
    throw error;
  }
}
