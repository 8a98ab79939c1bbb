import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'ssh2';
import type { ArtifactManifest } from '../../workspace/artifacts.js';
import { executable } from '../../config/command.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { writeAll } from '../../fs-atomic.js';
import { readRunRecord } from '../../store/run-record.js';
import { RunFiles } from '../../paths.js';
import type { ArtifactSettings, Job } from '../../run/model.js';
import { connectHost, exec, resolveHost, type HostEntry, type HostSettings } from './connection.js';
import { shellQuote } from '../shell-quote.js';
import { ContentStore, type Manifest } from '../../workspace/snapshot.js';
import { packFiles, packWatchedCommand, receiveArtifacts } from '../tar-transfer.js';
import { notStartedProcess, type Backend, type ExitInfo, type RunIO, type StartedProcess } from '../types.js';

/** How often a running remote command's logs and exit file are read. */
const POLL_MS = 300;
/** Between reconnection attempts after the connection dropped. */
const RECONNECT_MS = 1000;
const DEFAULT_ROOT = '.qwex';
const DEFAULT_KEEP_DAYS = 7;

/** backends.ssh in qwex.yaml. */
export interface SshOptions {
  host?: string;
  /** The remote directory for runs and the sync cache; relative paths are from the remote home. */
  root?: string;
  /** Remote run directories (logs, exit status) older than this are removed when a new run starts there. */
  keep_days?: number;
  hosts?: Record<string, HostEntry>;
}

/**
 * Runs the command on another machine over SSH, with nothing of qwex there
 * but a POSIX shell and tar. The run's workspace snapshot is sent as a tar
 * stream into a per-project cache on the remote (only files whose content
 * changed since the last sync there), copied into the run's own directory,
 * and the command starts under `setsid` with a small shell wrapper that
 * writes its process group and, at the end, its exit status: the run
 * survives the SSH connection and qwex going away. Output is read back by
 * byte offset into stdout.log/stderr.log; after a dropped connection the
 * copy resumes where the local files end.
 */
export class SshBackend implements Backend {
  readonly name = 'ssh';
  readonly outputNeedsSupervisor = true;
  readonly runsRemotely = true;

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const options = job.backendOptions as SshOptions;
    if (!options.host) {
      throw new QwexError(ErrorCode.Usage, 'no host given for an ssh run', { hint: 'pass --host NAME, or set backends.ssh.host in qwex.yaml' });
    }
    if (!job.workspace) throw new QwexError(ErrorCode.Internal, 'an ssh run was recorded without its workspace snapshot');
    const settings = await resolveHost(options.host, options.hosts);
    const client = await connectHost(settings, options.hosts);
    try {
      const root = options.root ?? DEFAULT_ROOT;
      const remoteDir = `${root}/runs/${io.runId}`;
      await preflight(client, settings, root, remoteDir, options.keep_days ?? DEFAULT_KEEP_DAYS);
      const store = new ContentStore();
      const manifest = store.readManifest(job.workspace.manifest);
      const sync = await syncWorkspace(client, settings, store, manifest, `${root}/cache/${projectKey(manifest.project)}`, `${remoteDir}/workspace`);
      const cwd = job.workspace.cwd;
      await exec(client, `mkdir -p ${shellQuote(`${remoteDir}/workspace${cwd ? `/${cwd}` : ''}`)}`);
      const wrapper = wrapperScript(job, io, cwd);
      const started = await exec(client, `cd ${shellQuote(remoteDir)} && cat > run.sh && (if command -v setsid >/dev/null 2>&1; then setsid sh run.sh; else sh run.sh; fi >/dev/null 2>&1 </dev/null &) && echo ok`, { stdin: wrapper });
      if (started.code !== 0) throw remoteFailure(settings, 'cannot start the command', started.stderr);
      const pgid = await waitForPgid(client, remoteDir);
      const details = { host: settings.alias, hostname: settings.hostname, port: settings.port, user: settings.user, remoteDir, remotePgid: pgid, sync };
      return follow(details, io.stdoutPath, io.stderrPath, job.backendOptions as SshOptions, client);
    } catch (error) {
      client.end();
      throw error;
    }
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    if (typeof details.remoteDir !== 'string' || typeof details.host !== 'string') {
      return notStartedProcess({ exitCode: null, signal: null, lost: 'its record names no remote run directory' });
    }
    // The host settings the run was started with (qwex.yaml's hosts) are in its record.
    let options: SshOptions = {};
    try {
      options = readRunRecord(dir).job.backendOptions as SshOptions;
    } catch {
      // ~/.ssh/config still resolves the host
    }
    return follow(details, join(dir, RunFiles.stdout), join(dir, RunFiles.stderr), options);
  }
}

async function preflight(client: Client, settings: HostSettings, root: string, remoteDir: string, keepDays: number): Promise<void> {
  const prune = `find ${shellQuote(`${root}/runs`)} -mindepth 1 -maxdepth 1 -type d -mtime +${Math.max(0, Math.floor(keepDays))} -exec rm -rf {} + 2>/dev/null`;
  const r = await exec(client, `command -v tar >/dev/null 2>&1 || { echo 'tar: not found' >&2; exit 90; }; mkdir -p ${shellQuote(remoteDir)} || exit 91; ${prune}; exit 0`);
  if (r.code === 90) {
    throw new QwexError(ErrorCode.BackendUnavailable, `${settings.alias} has no tar: qwex needs a POSIX shell and tar there`, { hint: 'install tar on the remote machine' });
  }
  if (r.code === 127 && /not found/.test(r.stderr)) {
    throw new QwexError(ErrorCode.BackendUnavailable, `${settings.alias} has no POSIX shell for ${settings.user}: ${r.stderr.trim()}`);
  }
  if (r.code !== 0) throw remoteFailure(settings, `cannot create ${remoteDir}`, r.stderr);
}

/**
 * Brings the remote cache of this project up to the manifest (sending only
 * files whose content or mode changed, removing the rest), then copies it
 * into the run's own workspace. A lock directory keeps two syncs of one
 * project apart; one older than 10 minutes is taken as left by a dead sync.
 */
async function syncWorkspace(client: Client, settings: HostSettings, store: ContentStore, manifest: Manifest, cache: string, workspace: string): Promise<{ files: number; bytes: number; removed: number }> {
  const q = shellQuote;
  const lock = `${cache}.lock`;
  const locked = await exec(client, `mkdir -p ${q(cache)}/tree && i=0; while ! mkdir ${q(lock)} 2>/dev/null; do if [ -n "$(find ${q(lock)} -maxdepth 0 -mmin +10 2>/dev/null)" ]; then rmdir ${q(lock)}; fi; i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.2; done; cat ${q(cache)}/manifest.json 2>/dev/null; exit 0`);
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
    if (remove.length > 0) {
      const r = await exec(client, `cd ${q(cache)}/tree && xargs -0 rm -f --`, { stdin: Buffer.from(`${remove.join('\0')}\0`) });
      if (r.code !== 0) throw remoteFailure(settings, 'cannot remove deleted files from the remote copy', r.stderr);
    }
    if (send.length > 0 || sendLinks.length > 0) {
      const tar = await packFiles(store, send, sendLinks);
      const r = await exec(client, `cd ${q(cache)}/tree && tar -xf -`, { stdin: tar });
      if (r.code !== 0) throw remoteFailure(settings, 'the workspace could not be unpacked', r.stderr);
    }
    const saved = await exec(client, `cat > ${q(cache)}/manifest.json.tmp && mv ${q(cache)}/manifest.json.tmp ${q(cache)}/manifest.json && rm -rf ${q(workspace)} && cp -R ${q(cache)}/tree ${q(workspace)}`, {
      stdin: JSON.stringify({ files: manifest.files, symlinks: manifest.symlinks }),
    });
    if (saved.code !== 0) throw remoteFailure(settings, 'cannot make the run\'s copy of the workspace', saved.stderr);
    return { files: send.length + sendLinks.length, bytes: send.reduce((n, f) => n + f.size, 0), removed: remove.length };
  } finally {
    await exec(client, `rmdir ${q(lock)} 2>/dev/null; exit 0`).catch(() => {});
  }
}

/** The shell wrapper: the command in its own process group (job control), its pgid and exit status in files. */
function wrapperScript(job: Job, io: RunIO, cwd: string): string {
  const { file, args } = executable(job);
  const env = { ...job.env, PYTHONUNBUFFERED: job.env.PYTHONUNBUFFERED ?? '1', QWEX_RUN_ID: io.runId };
  const exports = Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`).join('\n');
  return `#!/bin/sh
# Written by qwex: runs one command and records its process group and exit status.
RUN=$(cd "$(dirname "$0")" && pwd) || exit 1
cd "$RUN/workspace/${cwd.replace(/["\\$`]/g, '\\$&')}" || { echo 127 > "$RUN/exit.tmp"; mv "$RUN/exit.tmp" "$RUN/exit"; exit 0; }
${exports}
export QWEX_RUN_DIR="$RUN"
# The command leads its own process group, so that cancel signals it and not this wrapper
# (setsid does not fork here: a background child is never a group leader).
if command -v setsid >/dev/null 2>&1; then set -- setsid
elif command -v perl >/dev/null 2>&1; then set -- perl -e 'setpgrp(0, 0); exec { $ARGV[0] } @ARGV or exit 127'
else set --
fi
"$@" ${[file, ...args].map(shellQuote).join(' ')} >"$RUN/stdout.log" 2>"$RUN/stderr.log" </dev/null &
echo $! > "$RUN/pgid.tmp" && mv "$RUN/pgid.tmp" "$RUN/pgid"
wait $!
echo $? > "$RUN/exit.tmp" && mv "$RUN/exit.tmp" "$RUN/exit"
`;
}

async function waitForPgid(client: Client, remoteDir: string): Promise<number> {
  const r = await exec(client, `i=0; while [ ! -s ${shellQuote(`${remoteDir}/pgid`)} ]; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done; cat ${shellQuote(`${remoteDir}/pgid`)}`);
  const pgid = Number(r.stdout.toString('utf8').trim());
  if (r.code !== 0 || !Number.isInteger(pgid) || pgid <= 0) {
    throw new QwexError(ErrorCode.BackendUnavailable, `the command did not start on the remote (no process group recorded in ${remoteDir}): ${r.stderr.trim()}`);
  }
  return pgid;
}

/**
 * Follows a remote run: polls its exit file and log sizes, copies new bytes
 * into the local logs, reconnects after a dropped connection. `exited`
 * settles once the exit file is there and every byte before it was copied.
 */
function follow(details: Record<string, unknown>, stdoutPath: string, stderrPath: string, options: SshOptions, first?: Client): StartedProcess {
  const remoteDir = String(details.remoteDir);
  const pgid = Number(details.remotePgid);
  let client: Client | undefined = first;
  let disposed = false;
  let result: ExitInfo | undefined;
  const alias = String(details.host);

  const connection = async (): Promise<Client> => {
    if (client) return client;
    const settings = await resolveHost(alias, options.hosts);
    const fresh = await connectHost(settings, options.hosts);
    fresh.on('close', () => {
      if (client === fresh) client = undefined;
    });
    fresh.on('error', () => {});
    client = fresh;
    return fresh;
  };
  if (first) {
    first.on('close', () => {
      if (client === first) client = undefined;
    });
    first.on('error', () => {});
  }

  const readStatus = async (c: Client): Promise<{ exit: string; sizes: [number, number] }> => {
    const r = await exec(c, `cd ${shellQuote(remoteDir)} 2>/dev/null || exit 3; printf '%s\\n' "$(cat exit 2>/dev/null)"; wc -c < stdout.log 2>/dev/null || echo 0; wc -c < stderr.log 2>/dev/null || echo 0`);
    if (r.code === 3) throw new RemoteGone();
    const [exit = '', out = '0', err = '0'] = r.stdout.toString('utf8').split('\n');
    return { exit: exit.trim(), sizes: [Number(out.trim()) || 0, Number(err.trim()) || 0] };
  };

  const fetch = async (c: Client, name: string, path: string, remoteSize: number): Promise<void> => {
    const fd = openSync(path, 'a', 0o600);
    try {
      const local = fstatSync(fd).size;
      if (remoteSize <= local) return;
      await exec(c, `tail -c +${local + 1} ${shellQuote(`${remoteDir}/${name}`)} | head -c ${remoteSize - local}`, {
        onStdout: (chunk) => writeAll(fd, chunk),
      });
    } finally {
      closeSync(fd);
    }
  };

  // Copying starts when someone waits for the end, not when a run is merely looked at (`state`):
  // two copiers of one run would both append the same bytes.
  let exited: Promise<ExitInfo> | undefined;
  const copyToEnd = (): Promise<ExitInfo> => (exited ??= (async (): Promise<ExitInfo> => {
    for (;;) {
      if (disposed) return new Promise<ExitInfo>(() => {});
      try {
        const c = await connection();
        const status = await readStatus(c);
        await fetch(c, 'stdout.log', stdoutPath, status.sizes[0]);
        await fetch(c, 'stderr.log', stderrPath, status.sizes[1]);
        if (status.exit !== '') {
          const code = Number(status.exit);
          result = { exitCode: Number.isInteger(code) ? code : null, signal: null };
          return result;
        }
      } catch (error) {
        if (error instanceof RemoteGone) {
          result = { exitCode: null, signal: null, lost: `its remote directory ${remoteDir} on ${alias} is gone` };
          return result;
        }
        client?.end();
        client = undefined;
        await sleep(RECONNECT_MS);
        continue;
      }
      await sleep(POLL_MS);
    }
  })());

  return {
    spawned: true,
    details,
    get exited() {
      return copyToEnd();
    },
    signal: (sig) => {
      const name = sig.replace(/^SIG/, '');
      void connection()
        // dash wants "--" before a negative pid, busybox refuses it: try both.
        .then((c) => exec(c, `kill -s ${name} -- -${pgid} 2>/dev/null || kill -s ${name} -${pgid} 2>/dev/null; exit 0`))
        .catch(() => {});
    },
    state: async () => {
      if (result) return result;
      try {
        const status = await readStatus(await connection());
        return status.exit === '' ? undefined : await copyToEnd();
      } catch (error) {
        if (error instanceof RemoteGone) return copyToEnd();
        return undefined;
      }
    },
    collectArtifacts: async (target) => collectArtifacts(await connection(), remoteDir, target),
    release: async () => {
      try {
        await exec(await connection(), `rm -rf ${shellQuote(`${remoteDir}/workspace`)}; exit 0`);
      } catch {
        // the remote is away: its retention removes the directory later
      }
      client?.end();
    },
    dispose: () => {
      disposed = true;
      client?.end();
    },
  };
}

class RemoteGone extends Error {}

/** Packs the watched directories on the remote and brings them home (tar-transfer.ts checks every path). */
async function collectArtifacts(client: Client, remoteDir: string, target: { runId: string; cwd: string; settings: ArtifactSettings; runDir: string }): Promise<ArtifactManifest> {
  const cwd = `${remoteDir}/workspace${target.cwd ? `/${target.cwd}` : ''}`;
  let failure: string | undefined;
  const manifest = await receiveArtifacts(async (write) => {
    const r = await exec(client, `cd ${shellQuote(cwd)} 2>/dev/null || exit 0; ${packWatchedCommand(target.settings.watch, shellQuote)}`, { onStdout: write });
    if (r.code !== 0) failure = r.stderr.trim();
  }, target);
  if (failure !== undefined) throw new Error(`tar on the remote failed: ${failure}`);
  return manifest;
}

/** The remote cache of a project: one per (this machine, project path). */
function projectKey(project: string): string {
  return createHash('sha256').update(`${hostname()}:${project}`).digest('hex').slice(0, 16);
}

function remoteFailure(settings: HostSettings, what: string, stderr: string): QwexError {
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
