import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import type { Client } from 'ssh2';
import { ErrorCode, QwexError } from '../../errors.js';
import { shellQuote } from '../shell-quote.js';
import { NO_PROGRESS, type Progress } from '../../progress.js';
import { countBytes, packFiles, tarSize } from '../tar-transfer.js';
import type { ContentStore, Manifest } from '../../workspace/snapshot.js';
import { exec, type HostSettings } from './connection.js';

/** What `backend.sync` records: how much of the workspace went over the wire. */
export interface SyncStats {
  files: number;
  bytes: number;
  removed: number;
}

/**
 * Checks the remote (a POSIX shell and tar), makes the run's directory,
 * prunes run directories older than `keepDays`, and says whether this
 * run's command was already launched there (an earlier supervisor that
 * died after starting it): then it must be adopted, not started again.
 */
export async function preflight(client: Client, settings: HostSettings, root: string, remoteDir: string, keepDays: number, signal: AbortSignal): Promise<{ launched: boolean }> {
  const prune = `find ${shellQuote(`${root}/runs`)} -mindepth 1 -maxdepth 1 -type d -mtime +${Math.max(0, Math.floor(keepDays))} -exec rm -rf {} + 2>/dev/null`;
  const r = await exec(
    client,
    `command -v tar >/dev/null 2>&1 || { echo 'tar: not found' >&2; exit 90; }; mkdir -p ${shellQuote(remoteDir)} || exit 91; ${prune}; [ -d ${shellQuote(`${remoteDir}/started`)} ] && echo launched; exit 0`,
    { signal },
  );
  if (r.code === 90) {
    throw new QwexError(ErrorCode.BackendUnavailable, `${settings.alias} has no tar: qwex needs a POSIX shell and tar there`, { hint: 'install tar on the remote machine' });
  }
  if (r.code === 127 && /not found/.test(r.stderr)) {
    throw new QwexError(ErrorCode.BackendUnavailable, `${settings.alias} has no POSIX shell for ${settings.user}: ${r.stderr.trim()}`);
  }
  if (r.code !== 0) throw remoteFailure(settings, `cannot create ${remoteDir}`, r.stderr);
  return { launched: r.stdout.toString('utf8').trim() === 'launched' };
}

/**
 * Brings the remote cache of this project up to the manifest (sending only
 * files whose content or mode changed, removing the rest), then copies it
 * into the run's own workspace. A lock directory keeps two syncs of one
 * project apart; one older than 10 minutes is taken as left by a dead sync.
 * `signal` cuts the transfer in progress (a cancel); the lock is let go all
 * the same.
 */
export async function syncWorkspace(
  client: Client,
  settings: HostSettings,
  store: ContentStore,
  manifest: Manifest,
  cache: string,
  workspace: string,
  signal: AbortSignal,
  progress: Progress = NO_PROGRESS,
): Promise<SyncStats> {
  const q = shellQuote;
  const lock = `${cache}.lock`;
  const locked = await exec(client, `mkdir -p ${q(cache)}/tree && i=0; while ! mkdir ${q(lock)} 2>/dev/null; do if [ -n "$(find ${q(lock)} -maxdepth 0 -mmin +10 2>/dev/null)" ]; then rmdir ${q(lock)}; fi; i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.2; done; cat ${q(cache)}/manifest.json 2>/dev/null; exit 0`, { signal });
  if (locked.code !== 0) throw remoteFailure(settings, `cannot lock ${cache} for the workspace sync`, locked.stderr);
  try {
    let remote: Pick<Manifest, 'files' | 'symlinks'> = { files: [], symlinks: [] };
    try {
      if (locked.stdout.length > 0) remote = JSON.parse(locked.stdout.toString('utf8')) as Manifest;
    } catch {
      // unreadable: everything is sent again
    }
    const had = new Map(remote.files.map((f) => [f.path, `${f.sha256}:${f.mode}`]));
    const hadLinks = new Map(remote.symlinks.map((l) => [l.path, l.target]));
    const send = manifest.files.filter((f) => had.get(f.path) !== `${f.sha256}:${f.mode}`);
    const sendLinks = manifest.symlinks.filter((l) => hadLinks.get(l.path) !== l.target);
    const keep = new Set([...manifest.files.map((f) => f.path), ...manifest.symlinks.map((l) => l.path)]);
    const remove = [...had.keys(), ...hadLinks.keys()].filter((p) => !keep.has(p) || sendLinks.some((l) => l.path === p));
    // The remote manifest goes first: a sync cut short leaves a cache that the next one repairs.
    if (remove.length > 0 || send.length > 0 || sendLinks.length > 0) {
      const r = await exec(client, `rm -f ${q(cache)}/manifest.json`, { signal });
      if (r.code !== 0) throw remoteFailure(settings, 'cannot update the remote copy', r.stderr);
    }
    if (remove.length > 0) {
      const r = await exec(client, `cd ${q(cache)}/tree && xargs -0 rm -f --`, { stdin: Buffer.from(`${remove.join('\0')}\0`), signal });
      if (r.code !== 0) throw remoteFailure(settings, 'cannot remove deleted files from the remote copy', r.stderr);
    }
    if (send.length > 0 || sendLinks.length > 0) {
      // Progress: the bytes of the tar read into the channel (ssh2 reads as the window lets it send).
      const step = progress.step(`sending the workspace to ${settings.alias}`, 'bytes', tarSize(send, sendLinks));
      try {
        const detail = `${send.length} file${send.length === 1 ? '' : 's'}`;
        const tar = countBytes(await packFiles(store, send, sendLinks), (n) => step.add(n, { detail }));
        const r = await exec(client, `cd ${q(cache)}/tree && tar -xf -`, { stdin: tar, signal });
        if (r.code !== 0) throw remoteFailure(settings, 'the workspace could not be unpacked', r.stderr);
      } finally {
        step.end();
      }
    }
    const saved = await exec(client, `cat > ${q(cache)}/manifest.json.tmp && mv ${q(cache)}/manifest.json.tmp ${q(cache)}/manifest.json && rm -rf ${q(workspace)} && cp -R ${q(cache)}/tree ${q(workspace)}`, {
      stdin: JSON.stringify({ files: manifest.files, symlinks: manifest.symlinks }),
      signal,
    });
    if (saved.code !== 0) throw remoteFailure(settings, 'cannot make the run\'s copy of the workspace', saved.stderr);
    return { files: send.length + sendLinks.length, bytes: send.reduce((n, f) => n + f.size, 0), removed: remove.length };
  } finally {
    await exec(client, `rmdir ${q(lock)} 2>/dev/null; exit 0`).catch(() => {
      // the connection is gone: a lock older than 10 minutes is taken as left by a dead sync
    });
  }
}

/** The remote cache of a project: one per (this machine, project path). */
export function projectKey(project: string): string {
  return createHash('sha256').update(`${hostname()}:${project}`).digest('hex').slice(0, 16);
}

export function remoteFailure(settings: HostSettings, what: string, stderr: string): QwexError {
  const text = stderr.trim();
  // GNU tar often says "Wrote only N of M bytes" first, and "No space left on device" later, if at all.
  const full = text.split('\n').find((l) => /no space left on device|disk quota exceeded|wrote only \d+ of \d+ bytes/i.test(l));
  if (full !== undefined) {
    return new QwexError(ErrorCode.BackendUnavailable, `${settings.alias}: ${what}: the remote disk is full (${full.trim()})`, {
      hint: 'free space there (old runs live under backends.ssh.root, .qwex/ by default)',
    });
  }
  return new QwexError(ErrorCode.BackendUnavailable, `${settings.alias}: ${what}${text ? `: ${text.split('\n')[0]}` : ''}`);
}
