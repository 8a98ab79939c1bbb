import { createHash } from 'node:crypto';
import type { WorkspaceUpload } from '../src/cloud/api.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import type { Manifest, ManifestFile } from '../src/workspace/snapshot.js';
import type { BlobStore } from './blob-store.js';

const MAX_PATH = 4096;

/**
 * Turns a client's workspace manifest into one the Runner can materialise:
 * every path relative and inside the workspace (no "..", no absolute path,
 * no file under another file), every file's content already stored with
 * the size it claims. Its id is computed as qwex computes a snapshot's, so
 * an unchanged project has the same id on the client and here.
 */
export async function acceptWorkspace(upload: WorkspaceUpload, project: string, blobs: BlobStore): Promise<Manifest> {
  const seen = new Set<string>();
  const check = (path: string, what: string): void => {
    if (!isInsidePath(path)) {
      throw new QwexError(ErrorCode.Usage, `workspace: ${what} "${truncate(path)}" is not a relative path inside the workspace`, {
        hint: 'paths use "/" between names, with no "", "." or ".." parts and no leading "/"',
      });
    }
    if (seen.has(path)) throw new QwexError(ErrorCode.Usage, `workspace: "${truncate(path)}" is listed twice`);
    seen.add(path);
  };
  const files: ManifestFile[] = upload.files.map((f) => {
    check(f.path, 'file');
    return { path: f.path, size: f.size, mode: f.mode & 0o777, sha256: f.sha256 };
  });
  const symlinks = upload.symlinks.map((l) => {
    check(l.path, 'symlink');
    if (l.target.length === 0 || l.target.length > MAX_PATH || l.target.includes('\0')) throw new QwexError(ErrorCode.Usage, `workspace: symlink "${truncate(l.path)}" has no usable target`);
    return { path: l.path, target: l.target };
  });
  for (const path of seen) {
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) {
      if (seen.has(path.slice(0, i))) throw new QwexError(ErrorCode.Usage, `workspace: "${truncate(path)}" is under "${truncate(path.slice(0, i))}", which is not a directory`);
    }
  }
  const sizes = await blobs.sizes(files.map((f) => f.sha256));
  const missing = [...new Set(files.filter((f) => !sizes.has(f.sha256)).map((f) => f.sha256))];
  if (missing.length > 0) {
    throw new QwexError(ErrorCode.BlobMissing, `workspace: the server lacks the content of ${missing.length} file(s)`, {
      hint: 'ask POST /v1/blobs/missing and upload those (PUT /v1/blobs/SHA256) before submitting',
      details: { missing: missing.slice(0, 100) },
    });
  }
  for (const f of files) {
    if (sizes.get(f.sha256) !== f.size) throw new QwexError(ErrorCode.Usage, `workspace: "${truncate(f.path)}" claims ${f.size} bytes; its content has ${sizes.get(f.sha256)}`);
  }
  const body = { files, symlinks, linked: [] as string[] };
  const id = createHash('sha256').update(JSON.stringify(body)).digest('hex');
  return { id, project, createdAt: new Date().toISOString(), ...body, totalBytes: files.reduce((n, f) => n + f.size, 0) };
}

/** A relative path with "/" separators whose every part is a real name. */
export function isInsidePath(path: string): boolean {
  if (path.length === 0 || path.length > MAX_PATH || path.includes('\0')) return false;
  return path.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}

function truncate(text: string): string {
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
