import { closeSync, createReadStream, mkdirSync, openSync, rmSync } from 'node:fs';
import { dirname, join, normalize, sep } from 'node:path';
import { pipeline, Transform } from 'node:stream';
import { captureArtifacts, type ArtifactManifest } from '../workspace/artifacts.js';
import { writeAll } from '../fs-atomic.js';
import { RunFiles } from '../paths.js';
import { NO_PROGRESS, type Progress } from '../progress.js';
import type { ArtifactSettings } from '../run/model.js';
import type { ContentStore, Manifest } from '../workspace/snapshot.js';
import type * as TarStreamModule from 'tar-stream';

type TarStream = typeof TarStreamModule;

/**
 * Tar streams between qwex and a machine it reaches only through a byte
 * channel (an SSH exec, a Kubernetes exec): the workspace goes out as one
 * tar read from the content store (the snapshot, not the tree as it is now),
 * and the watched directories come back as one tar that is unpacked with
 * every escaping path rejected. Shared by the ssh and k8s backends.
 */

/** A tar stream of the given files, read from the content store. */
export async function packFiles(store: ContentStore, files: Manifest['files'], links: Manifest['symlinks']): Promise<NodeJS.ReadableStream> {
  const { pack: createPack } = await tarStream();
  const pack = createPack();
  void (async () => {
    try {
      for (const link of links) {
        await new Promise<void>((resolve, reject) => pack.entry({ name: link.path, type: 'symlink', linkname: link.target }, (e) => (e ? reject(e) : resolve())));
      }
      for (const file of files) {
        await new Promise<void>((resolve, reject) => {
          const entry = pack.entry({ name: file.path, size: file.size, mode: file.mode & 0o777 }, (e) => (e ? reject(e) : resolve()));
          createReadStream(store.objectPath(file.sha256)).on('error', reject).pipe(entry);
        });
      }
      pack.finalize();
    } catch (error) {
      pack.destroy(error as Error);
    }
  })();
  return pack as unknown as NodeJS.ReadableStream;
}

/** The same stream, with `onChunk` told the size of each chunk as the reader takes it (flow and backpressure unchanged). */
export function countBytes(source: NodeJS.ReadableStream, onChunk: (bytes: number) => void): NodeJS.ReadableStream {
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      onChunk(chunk.length);
      callback(null, chunk);
    },
  });
  // pipeline handles an error of either stream (the reader sees the counter end with it).
  pipeline(source, counter, () => {});
  return counter;
}

/** The size of the tar `packFiles` writes for these entries (ustar: a 512-byte header per entry, contents padded to 512, two zero blocks), for progress. */
export function tarSize(files: Manifest['files'], links: Manifest['symlinks']): number {
  const block = (n: number): number => Math.ceil(n / 512) * 512;
  // Long names and link targets take an extra pax header and its data; counted as one header plus the padded name.
  const header = (name: string, link = ''): number => 512 + (name.length > 100 || link.length > 100 ? 512 + block(name.length + link.length + 64) : 0);
  return files.reduce((n, f) => n + header(f.path) + block(f.size), 0) + links.reduce((n, l) => n + header(l.path, l.target), 0) + 1024;
}

/** The whole stream in memory: for channels that must know the size before sending (`head -c N | tar -x`). */
export async function packToBuffer(store: ContentStore, manifest: Pick<Manifest, 'files' | 'symlinks'>): Promise<Buffer> {
  const stream = await packFiles(store, manifest.files, manifest.symlinks);
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Where the tar of the watched directories is read from: `produce` writes it into `write` and resolves when done. */
export type TarSource = (write: (chunk: Buffer) => void) => Promise<void>;

/**
 * Unpacks the tar that `source` produces into a scratch directory of the
 * run (rejecting any path that would leave it, and anything but plain files
 * and directories), and captures it from there with the local rules
 * (ignore patterns, size limit, sha256) into files/ and artifacts.json.
 */
export async function receiveArtifacts(source: TarSource, target: { runId: string; settings: ArtifactSettings; runDir: string; progress?: Progress }): Promise<ArtifactManifest> {
  const scratch = join(target.runDir, 'remote-artifacts');
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true, mode: 0o700 });
  const unsafe: string[] = [];
  try {
    const { extract: createExtract } = await tarStream();
    const extract = createExtract();
    const done = new Promise<void>((resolve, reject) => {
      extract.on('entry', (header, stream, next) => {
        const rel = normalize(header.name);
        const dest = join(scratch, rel);
        if (rel.startsWith('..') || rel.startsWith(sep) || !dest.startsWith(scratch + sep)) {
          unsafe.push(header.name);
          stream.resume();
          return next();
        }
        if (header.type === 'directory') {
          mkdirSync(dest, { recursive: true });
          stream.resume();
          return next();
        }
        if (header.type !== 'file') {
          stream.resume();
          return next();
        }
        mkdirSync(dirname(dest), { recursive: true });
        const fd = openSync(dest, 'w', 0o600);
        stream.on('data', (data: unknown) => writeAll(fd, data as Buffer));
        stream.on('end', () => {
          closeSync(fd);
          next();
        });
        stream.on('error', reject);
      });
      extract.on('finish', resolve);
      extract.on('error', reject);
    });
    // Progress: the bytes of the tar that came home so far (its size is not known beforehand).
    const step = (target.progress ?? NO_PROGRESS).step('collecting artifacts', 'bytes');
    try {
      await source((chunk) => {
        step.add(chunk.length);
        extract.write(chunk);
      });
    } finally {
      step.end();
      (extract as unknown as { end(): void }).end();
    }
    await done;
    const manifest = await captureArtifacts({
      cwd: scratch,
      projectRoot: scratch,
      settings: target.settings,
      runId: target.runId,
      baseline: new Map(),
      filesDir: join(target.runDir, RunFiles.files),
      manifestPath: join(target.runDir, RunFiles.artifacts),
    });
    for (const path of unsafe) manifest.skipped.push({ path, reason: 'its path leads outside the run directory' });
    return manifest;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * A POSIX shell line that writes a tar of those watched directories that
 * exist under the current directory to stdout (nothing when none exists).
 */
export function packWatchedCommand(watch: readonly string[], quote: (s: string) => string): string {
  const watched = watch.map(quote).join(' ');
  return `set --; for d in ${watched}; do [ -e "$d" ] && set -- "$@" "$d"; done; [ $# -eq 0 ] && exit 0; tar -cf - -- "$@"`;
}

/** tar-stream is CommonJS: its functions are on the default export once bundled. */
async function tarStream(): Promise<TarStream> {
  const mod = await import('tar-stream');
  return (mod as unknown as { default?: typeof mod }).default ?? mod;
}
