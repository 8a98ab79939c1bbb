import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, lstatSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync, type BigIntStats } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import ignore, { type Ignore } from 'ignore';
import { errnoCode } from '../errors.js';
import { writeJsonAtomicGrouped } from '../fs-atomic.js';
import type { ArtifactSettings, ArtifactSummary } from '../run/model.js';

/**
 * Artifact capture: after the command exits, copy what it created or changed
 * under the watched directories into the run's `files/`, keeping paths
 * (`files/out/model.pth`), and write `artifacts.json` with sha256 for each.
 *
 * "Changed" is judged against a baseline taken just before the command
 * started (size, mtime in ns, inode): files left by earlier runs are not
 * captured again. Symlinks are never followed out of the project root;
 * a symlink to a file inside it is captured as that file's content.
 */
export interface ArtifactFile {
  /** Relative to the job's working directory, with '/' separators. */
  path: string;
  size: number;
  sha256: string;
}

export interface SkippedArtifact {
  path: string;
  reason: string;
}

export interface ArtifactManifest {
  runId: string;
  capturedAt: string;
  files: ArtifactFile[];
  skipped: SkippedArtifact[];
  totalBytes: number;
  error?: string;
}

/** relative path -> state fingerprint, for files present before the run started. */
export type Baseline = Map<string, string>;

export interface CaptureContext {
  /** The job's working directory: watched paths are relative to it. */
  cwd: string;
  /** Nothing outside this directory is ever read. */
  projectRoot: string;
  settings: ArtifactSettings;
}

type Visit =
  | { kind: 'file'; rel: string; abs: string; stats: BigIntStats }
  | { kind: 'skip'; rel: string; reason: string };

export function takeBaseline(ctx: CaptureContext): Baseline {
  const baseline: Baseline = new Map();
  for (const visit of walkWatched(ctx)) {
    if (visit.kind === 'file') baseline.set(visit.rel, fingerprint(visit.stats));
  }
  return baseline;
}

export async function captureArtifacts(
  ctx: CaptureContext & { runId: string; baseline: Baseline; filesDir: string; manifestPath: string },
): Promise<ArtifactManifest> {
  const manifest: ArtifactManifest = { runId: ctx.runId, capturedAt: new Date().toISOString(), files: [], skipped: [], totalBytes: 0 };
  const maxBytes = ctx.settings.maxFileSizeMb * 1024 * 1024;
  try {
    for (const visit of walkWatched(ctx)) {
      if (visit.kind === 'skip') {
        manifest.skipped.push({ path: visit.rel, reason: visit.reason });
        continue;
      }
      if (ctx.baseline.get(visit.rel) === fingerprint(visit.stats)) continue;
      const size = Number(visit.stats.size);
      if (size > maxBytes) {
        manifest.skipped.push({ path: visit.rel, reason: `larger than max_file_size_mb (${ctx.settings.maxFileSizeMb})` });
        continue;
      }
      const dest = join(ctx.filesDir, ...visit.rel.split('/'));
      const sha256 = await copyHashing(visit.abs, dest);
      manifest.files.push({ path: visit.rel, size, sha256 });
      manifest.totalBytes += size;
    }
  } catch (error) {
    const code = errnoCode(error);
    manifest.error = code === 'ENOSPC'
      ? `no space left on device while capturing artifacts; ${manifest.files.length} file(s) were captured before it`
      : `artifact capture failed: ${(error as Error).message}`;
  }
  manifest.capturedAt = new Date().toISOString();
  try {
    // Its directory entry is flushed with the final run.json, written next in the same directory. Flushed on the thread
    // pool, with other runs' flushes (a supervisor of many runs goes on meanwhile).
    await writeJsonAtomicGrouped(ctx.manifestPath, manifest, 'file');
  } catch (error) {
    manifest.error ??= `cannot write artifacts.json: ${(error as Error).message}`;
  }
  return manifest;
}

export function summarize(manifest: ArtifactManifest): ArtifactSummary {
  return {
    count: manifest.files.length,
    bytes: manifest.totalBytes,
    skipped: manifest.skipped.length,
    ...(manifest.error === undefined ? {} : { error: manifest.error }),
  };
}

/** Copies src to dest while hashing it, in one read. A partial dest is removed on failure. */
export async function copyHashing(src: string, dest: string, mode = 0o644): Promise<string> {
  mkdirSync(dirname(dest), { recursive: true });
  const hash = createHash('sha256');
  try {
    await pipeline(
      createReadStream(src),
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          yield chunk;
        }
      },
      createWriteStream(dest, { flags: 'w', mode }),
    );
  } catch (error) {
    rmSync(dest, { force: true });
    throw error;
  }
  return hash.digest('hex');
}

function fingerprint(stats: BigIntStats): string {
  return `${stats.size}:${stats.mtimeNs}:${stats.ino}`;
}

function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

function toSlash(rel: string): string {
  return sep === '/' ? rel : rel.split(sep).join('/');
}

function* walkWatched(ctx: CaptureContext): Generator<Visit> {
  // Made once a watched directory exists: most runs write none, and resolving a deep path is a lookup per component.
  let realRoot: string | undefined;
  let ig: Ignore | undefined;
  const seen = new Set<string>();
  for (const watched of ctx.settings.watch) {
    const abs = resolve(ctx.cwd, watched);
    const rel = toSlash(relative(ctx.cwd, abs));
    if (rel === '' || rel.startsWith('..') || seen.has(rel)) continue;
    seen.add(rel);
    try {
      lstatSync(abs);
    } catch (error) {
      // A watched directory that does not exist has nothing to capture (realpath below says why another cannot be read).
      if (errnoCode(error) === 'ENOENT') continue;
    }
    if (realRoot === undefined) {
      try {
        realRoot = realpathSync(ctx.projectRoot);
      } catch (error) {
        // A project directory removed meanwhile has nothing to capture; one that cannot be resolved says so in the manifest.
        if (errnoCode(error) !== 'ENOENT') yield { kind: 'skip', rel: '.', reason: `cannot resolve the project directory: ${reasonOf(error)}` };
        return;
      }
    }
    let real: string;
    try {
      real = realpathSync(abs);
    } catch (error) {
      // Gone since the look above, or a link to nowhere: nothing to capture; one that cannot be resolved is said to be skipped.
      if (errnoCode(error) !== 'ENOENT') yield { kind: 'skip', rel, reason: `cannot resolve watched directory: ${reasonOf(error)}` };
      continue;
    }
    if (!isInside(realRoot, real)) {
      yield { kind: 'skip', rel, reason: 'watched directory resolves outside the project' };
      continue;
    }
    ig ??= ignore().add(ctx.settings.ignore);
    yield* walkDir(abs, rel, ctx, ig, realRoot);
  }
}

function* walkDir(absDir: string, relDir: string, ctx: CaptureContext, ig: Ignore, realRoot: string): Generator<Visit> {
  let entries: string[];
  try {
    entries = readdirSync(absDir).sort();
  } catch (error) {
    yield { kind: 'skip', rel: relDir, reason: `cannot read directory: ${reasonOf(error)}` };
    return;
  }
  for (const name of entries) {
    const abs = join(absDir, name);
    const rel = `${relDir}/${name}`;
    let stats: BigIntStats;
    try {
      stats = lstatSync(abs, { bigint: true });
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') yield { kind: 'skip', rel, reason: `cannot stat: ${reasonOf(error)}` };
      continue; // ENOENT: vanished while we looked
    }
    if (stats.isDirectory()) {
      if (ig.ignores(`${rel}/`)) continue;
      yield* walkDir(abs, rel, ctx, ig, realRoot);
      continue;
    }
    if (ig.ignores(rel)) continue;
    if (stats.isSymbolicLink()) {
      let target: string;
      try {
        target = realpathSync(abs);
      } catch (error) {
        yield { kind: 'skip', rel, reason: errnoCode(error) === 'ENOENT' ? 'dangling symlink' : `cannot resolve symlink: ${reasonOf(error)}` };
        continue;
      }
      if (!isInside(realRoot, target)) {
        yield { kind: 'skip', rel, reason: 'symlink points outside the project' };
        continue;
      }
      let targetStats: BigIntStats;
      try {
        targetStats = statSync(target, { bigint: true });
      } catch (error) {
        if (errnoCode(error) !== 'ENOENT') yield { kind: 'skip', rel, reason: `cannot stat symlink target: ${reasonOf(error)}` };
        continue; // ENOENT: removed since it was resolved
      }
      if (!targetStats.isFile()) {
        yield { kind: 'skip', rel, reason: 'symlink to a directory is not followed' };
        continue;
      }
      yield { kind: 'file', rel, abs: target, stats: targetStats };
      continue;
    }
    if (stats.isFile()) yield { kind: 'file', rel, abs, stats };
  }
}

/** A failure as a manifest's skip reason: the system error's code (EACCES, ELOOP...), else its message. */
function reasonOf(error: unknown): string {
  return errnoCode(error) ?? (error as Error).message;
}
