import { createHash } from 'node:crypto';
import {
  chmodSync,
  constants as fsConstants,
  copyFileSync,
  createReadStream,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  type Stats,
} from 'node:fs';
import { dirname, join } from 'node:path';
import ignore, { type Ignore } from 'ignore';
import { copyHashing } from './artifacts.js';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { writeJsonAtomic } from '../fs-atomic.js';
import { QWEX_DIR, stateDir } from '../paths.js';
import { NO_PROGRESS, type Progress } from '../progress.js';

/**
 * Workspace snapshots: the project's files as they were when a run was
 * submitted, kept by content in a per-user store (an unchanged file is
 * stored once, whatever the number of runs), and copied out for the run when
 * it starts. What is ignored (.gitignore rules, plus .qwexignore, which adds
 * to them) is not copied: it stays where it is, and the run's copy links to
 * it (datasets, caches, virtual environments keep working). `.git` and
 * `.qwex` are neither copied nor linked; the run's artifact directories
 * start empty.
 */
export interface ManifestFile {
  path: string;
  size: number;
  /** Permission bits (the executable bit matters). */
  mode: number;
  sha256: string;
}

export interface Manifest {
  /** sha256 of the entries: equal trees have equal ids. */
  id: string;
  project: string;
  createdAt: string;
  files: ManifestFile[];
  symlinks: { path: string; target: string }[];
  /** Ignored paths, not snapshotted: the run's copy links to the originals. */
  linked: string[];
  totalBytes: number;
}

export interface SnapshotOptions {
  /** Directories (relative to the project root) left out entirely: the run's artifact directories. */
  exclude?: string[];
  /** A tree larger than this fails before the run starts (bytes). */
  maxBytes?: number;
  /** Where the snapshot reports the files and bytes it went through so far. */
  progress?: Progress;
}

const ALWAYS_SKIPPED = new Set(['.git', QWEX_DIR]);

/** Manifests read lately, by path (see readManifest); callers must not change what they are given. */
const recentManifests = new Map<string, Manifest>();
const RECENT_MANIFESTS = 8;
const CACHED_MANIFEST_BYTES = 64 * 1024;

/** The per-user content-addressed store: objects/ab/cdef..., manifests/<id>.json, and per-project hash caches. */
export class ContentStore {
  constructor(readonly root: string = join(stateDir(), 'store')) {}

  objectPath(sha256: string): string {
    return join(this.root, 'objects', sha256.slice(0, 2), sha256.slice(2));
  }

  has(sha256: string): boolean {
    return existsSync(this.objectPath(sha256));
  }

  /** Copies `source` in under its hash, unless it is there; true when it was added. Objects are read-only. */
  async put(source: string, expected: string): Promise<boolean> {
    const target = this.objectPath(expected);
    if (existsSync(target)) return false;
    const tmp = `${target}.${process.pid}.tmp`;
    if ((await copyHashing(source, tmp, 0o444)) !== expected) {
      rmSync(tmp, { force: true });
      throw new QwexError(ErrorCode.Internal, `${source} changed while it was being snapshotted`, { hint: 'submit again once it is written' });
    }
    renameSync(tmp, target);
    return true;
  }

  writeManifest(manifest: Manifest): void {
    const path = join(this.root, 'manifests', `${manifest.id}.json`);
    mkdirSync(dirname(path), { recursive: true });
    if (!existsSync(path)) writeJsonAtomic(path, manifest, 'file');
  }

  readManifest(id: string): Manifest {
    const path = join(this.root, 'manifests', `${id}.json`);
    const known = recentManifests.get(path);
    if (known) return known;
    try {
      const text = readFileSync(path, 'utf8');
      const manifest = JSON.parse(text) as Manifest;
      // Content-addressed, so never changed: the runs of a batch share one, read once (small ones: qwexd keeps them).
      if (text.length <= CACHED_MANIFEST_BYTES) {
        if (recentManifests.size >= RECENT_MANIFESTS) recentManifests.delete(recentManifests.keys().next().value!);
        recentManifests.set(path, manifest);
      }
      return manifest;
    } catch (error) {
      throw new QwexError(ErrorCode.RecordInvalid, `workspace snapshot ${id} is missing from the store (${errnoCode(error) ?? 'unreadable'})`, {
        hint: 'the store was cleaned or moved; submit the run again',
        cause: error,
      });
    }
  }

  cachePath(project: string): string {
    return join(this.root, 'cache', `${createHash('sha256').update(project).digest('hex').slice(0, 32)}.json`);
  }
}

type HashCache = Record<string, [size: number, mtimeMs: number, ino: number, sha256: string]>;

/**
 * Records the project's tree into the store and returns its manifest. Files
 * whose size, mtime and inode are those of the last snapshot of this project
 * are not hashed again. A file that vanishes or cannot be read is an error,
 * never a silently smaller tree.
 */
export async function snapshotWorkspace(project: string, store: ContentStore, options: SnapshotOptions = {}): Promise<Manifest> {
  const exclude = new Set((options.exclude ?? []).map((p) => p.replace(/\/+$/, '')));
  const cachePath = store.cachePath(project);
  let cache: HashCache = {};
  try {
    cache = JSON.parse(readFileSync(cachePath, 'utf8')) as HashCache;
  } catch {
    // First snapshot of this project, or a cache torn or unreadable: every file is hashed, nothing else changes.
  }
  const nextCache: HashCache = {};
  const files: ManifestFile[] = [];
  const symlinks: Manifest['symlinks'] = [];
  const linked: string[] = [];
  let totalBytes = 0;
  const sizes = new Map<string, number>();
  const rootRules = ignore();
  addRules(rootRules, join(project, '.gitignore'));
  addRules(rootRules, join(project, '.qwexignore'));

  const walk = async (rel: string, rules: { base: string; ig: Ignore }[]): Promise<void> => {
    const abs = rel === '' ? project : join(project, rel);
    let names: string[];
    try {
      names = readdirSync(abs).sort();
    } catch (error) {
      throw unreadable(rel || '.', error);
    }
    const here = [...rules];
    if (rel !== '' && existsSync(join(abs, '.gitignore'))) {
      const ig = ignore();
      addRules(ig, join(abs, '.gitignore'));
      here.push({ base: rel, ig });
    }
    for (const name of names) {
      const path = rel === '' ? name : `${rel}/${name}`;
      if (rel === '' && ALWAYS_SKIPPED.has(name)) continue;
      if (name === '.git') continue;
      if (exclude.has(path)) continue;
      let stats: Stats;
      try {
        stats = lstatSync(join(project, path));
      } catch (error) {
        throw unreadable(path, error);
      }
      const isDir = stats.isDirectory();
      if (here.some(({ base, ig }) => ig.ignores(`${base === '' ? path : path.slice(base.length + 1)}${isDir ? '/' : ''}`))) {
        linked.push(path);
        continue;
      }
      if (isDir) {
        await walk(path, here);
      } else if (stats.isSymbolicLink()) {
        symlinks.push({ path, target: readlinkSync(join(project, path)) });
      } else if (stats.isFile()) {
        const cached = cache[path];
        let sha256: string;
        if (cached && cached[0] === stats.size && cached[1] === stats.mtimeMs && cached[2] === stats.ino && store.has(cached[3])) {
          sha256 = cached[3];
        } else {
          // A large file reports as it is read, not only once hashed.
          sha256 = await hashFile(join(project, path), path, (read) => step.set(totalBytes + read, { detail: `${files.length + 1} file${files.length === 0 ? '' : 's'}` }));
          await store.put(join(project, path), sha256);
        }
        nextCache[path] = [stats.size, stats.mtimeMs, stats.ino, sha256];
        files.push({ path, size: stats.size, mode: stats.mode & 0o777, sha256 });
        totalBytes += stats.size;
        step.set(totalBytes, { detail: `${files.length} file${files.length === 1 ? '' : 's'}` });
        const top = path.includes('/') ? path.slice(0, path.indexOf('/')) : path;
        sizes.set(top, (sizes.get(top) ?? 0) + stats.size);
        if (options.maxBytes !== undefined && totalBytes > options.maxBytes) throw tooBig(options.maxBytes, sizes);
      }
      // sockets, fifos and devices are not part of a workspace
    }
  };
  const step = (options.progress ?? NO_PROGRESS).step('taking a snapshot of the workspace', 'bytes');
  try {
    await walk('', [{ base: '', ig: rootRules }]);
  } finally {
    step.end();
  }

  const body = { files, symlinks, linked };
  const id = createHash('sha256').update(JSON.stringify(body)).digest('hex');
  const manifest: Manifest = { id, project, createdAt: new Date().toISOString(), ...body, totalBytes };
  store.writeManifest(manifest);
  mkdirSync(dirname(cachePath), { recursive: true });
  writeJsonAtomic(cachePath, nextCache, 'none');
  return manifest;
}

/**
 * Makes the run's own copy of a snapshot at `dest`: files copied from the
 * store (reflinks where the filesystem has them: copy-on-write, never hard
 * links a run could write through), symlinks as they were, ignored paths as
 * links to the originals in `project`.
 */
export function materializeWorkspace(manifest: Manifest, store: ContentStore, project: string, dest: string): void {
  mkdirSync(dest, { recursive: true });
  for (const file of manifest.files) {
    const target = join(dest, ...file.path.split('/'));
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(store.objectPath(file.sha256), target, fsConstants.COPYFILE_FICLONE);
    chmodSync(target, file.mode | 0o200); // the run owns its copy: writable, whatever the store's 0444
  }
  for (const link of manifest.symlinks) {
    const target = join(dest, ...link.path.split('/'));
    mkdirSync(dirname(target), { recursive: true });
    symlinkSync(link.target, target);
  }
  for (const path of manifest.linked) {
    const target = join(dest, ...path.split('/'));
    mkdirSync(dirname(target), { recursive: true });
    symlinkSync(join(project, ...path.split('/')), target);
  }
}

/** Paths whose content differs between two manifests (added, removed or changed), sorted. */
export function diffManifests(a: Manifest, b: Manifest): { added: string[]; removed: string[]; changed: string[] } {
  const left = new Map(a.files.map((f) => [f.path, f.sha256]));
  const right = new Map(b.files.map((f) => [f.path, f.sha256]));
  const added = [...right.keys()].filter((p) => !left.has(p)).sort();
  const removed = [...left.keys()].filter((p) => !right.has(p)).sort();
  const changed = [...left.keys()].filter((p) => right.has(p) && right.get(p) !== left.get(p)).sort();
  return { added, removed, changed };
}

/** Adds an ignore file's rules. One that exists but cannot be read fails the snapshot: without its rules, files meant to stay out (secrets, data) would be copied. */
function addRules(ig: Ignore, file: string): void {
  try {
    ig.add(readFileSync(file, 'utf8'));
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT' || code === 'EISDIR') return; // no such file (a directory of that name is none either): no rules
    throw unreadable(file, error);
  }
}

async function hashFile(abs: string, rel: string, onRead: (bytes: number) => void): Promise<string> {
  const hash = createHash('sha256');
  let read = 0;
  try {
    for await (const chunk of createReadStream(abs)) {
      hash.update(chunk as Buffer);
      onRead((read += (chunk as Buffer).length));
    }
  } catch (error) {
    throw unreadable(rel, error);
  }
  return hash.digest('hex');
}

function unreadable(path: string, error: unknown): QwexError {
  return new QwexError(ErrorCode.StateUnwritable, `cannot snapshot the workspace: ${path} could not be read (${errnoCode(error) ?? (error as Error).message})`, {
    hint: 'fix its permissions, or add it to .qwexignore to leave it out of snapshots',
  });
}

function tooBig(maxBytes: number, sizes: Map<string, number>): QwexError {
  const largest = [...sizes.entries()].sort((x, y) => y[1] - x[1]).slice(0, 5).map(([p, n]) => `${p} (${Math.round(n / 1e6)} MB)`);
  return new QwexError(ErrorCode.Usage, `the workspace is larger than workspace_max_mb (${Math.round(maxBytes / 1e6)} MB); largest: ${largest.join(', ')}`, {
    hint: 'add large data directories to .qwexignore (they stay reachable from the run), or raise workspace_max_mb',
  });
}

export function workspaceDir(runDir: string): string {
  return join(runDir, 'workspace');
}

/** Joins a project-relative path with '/' separators onto a root. */
export function under(root: string, relative: string): string {
  return relative === '' ? root : join(root, ...relative.split('/'));
}
