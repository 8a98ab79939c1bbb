import type { Client } from 'ssh2';
import { ErrorCode, QwexError } from '../../errors.js';
import { readRunRecord } from '../../store/run-record.js';
import type { Job } from '../../run/model.js';
import { ContentStore } from '../../workspace/snapshot.js';
import { untilAborted } from '../abort.js';
import { shellQuote } from '../shell-quote.js';
import { notStartedProcess, type Backend, type RunIO, type StartedProcess } from '../types.js';
import { connectHost, exec, resolveHost, type HostEntry } from './connection.js';
import { followRemote } from './follow.js';
import { launchOnce, waitForPgid, wrapperScript } from './launch.js';
import { preflight, projectKey, syncWorkspace, type SyncStats } from './sync.js';

const DEFAULT_ROOT = '.qwex';
const DEFAULT_KEEP_DAYS = 7;
/** How long the removal of a run directory that a cancel left unlaunched may take before the start gives up on it. */
const CLEANUP_MS = 5000;

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
 * stream into a per-project cache on the remote (sync.ts), copied into the
 * run's own directory `<root>/runs/<run id>`, and the command starts under
 * `setsid` from a small shell wrapper that records its process group and,
 * at the end, its exit status (launch.ts): the run survives the SSH
 * connection and qwex going away. A second start of the same run finds that
 * directory marked started and adopts the command instead of sending and
 * starting it again. Output is read back by byte offset (follow.ts).
 */
export class SshBackend implements Backend {
  readonly name = 'ssh';

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const options = job.backendOptions as SshOptions;
    if (!options.host) {
      throw new QwexError(ErrorCode.Usage, 'no host given for an ssh run', { hint: 'pass --host NAME, or set backends.ssh.host in qwex.yaml' });
    }
    if (!job.workspace) throw new QwexError(ErrorCode.Internal, 'an ssh run was recorded without its workspace snapshot');
    const settings = await untilAborted(resolveHost(options.host, options.hosts), io.signal);
    const connecting = connectHost(settings, options.hosts);
    let client: Client;
    try {
      client = await untilAborted(connecting, io.signal);
    } catch (error) {
      connecting.then((c) => c.end(), () => {});
      throw error;
    }
    const root = options.root ?? DEFAULT_ROOT;
    const remoteDir = `${root}/runs/${io.runId}`;
    let launched = false;
    try {
      let sync: SyncStats | undefined;
      if (!(await preflight(client, settings, root, remoteDir, options.keep_days ?? DEFAULT_KEEP_DAYS, io.signal)).launched) {
        const store = new ContentStore();
        const manifest = store.readManifest(job.workspace.manifest);
        sync = await syncWorkspace(client, settings, store, manifest, `${root}/cache/${projectKey(manifest.project)}`, `${remoteDir}/workspace`, io.signal, io.progress);
        const cwd = job.workspace.cwd;
        await exec(client, `mkdir -p ${shellQuote(`${remoteDir}/workspace${cwd ? `/${cwd}` : ''}`)}`, { signal: io.signal });
        io.signal.throwIfAborted();
        // From here on the command is started (or found started): a cancel now stops it instead.
        launched = true;
        await launchOnce(client, settings, remoteDir, wrapperScript(job, io.runId, cwd));
      }
      launched = true;
      const pgid = await waitForPgid(client, remoteDir);
      const details = { host: settings.alias, hostname: settings.hostname, port: settings.port, user: settings.user, remoteDir, remotePgid: pgid, ...(sync ? { sync } : {}) };
      return followRemote(details, io.dir, options.hosts, client);
    } catch (error) {
      // A cancel before the command was launched: what this start made on the remote goes.
      if (io.signal.aborted && !launched) await removeQuietly(client, remoteDir);
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
    return followRemote(details, dir, options.hosts);
  }
}

async function removeQuietly(client: Client, remoteDir: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    exec(client, `rm -rf ${shellQuote(remoteDir)}; exit 0`).catch(() => {
      // the connection is gone: the remote's retention (keep_days) removes it later
    }),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, CLEANUP_MS))),
  ]);
  clearTimeout(timer);
}
