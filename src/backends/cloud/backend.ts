import type { CloudJobSpec, CloudRunDetail, SubmitRequest } from '../../cloud/api.js';
import { CloudClient } from '../../cloud/client.js';
import { requireLogin } from '../../cloud/credentials.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { isTerminal, type Job } from '../../run/model.js';
import { readRunRecord } from '../../store/run-record.js';
import { ContentStore } from '../../workspace/snapshot.js';
import { findBackend } from '../registry.js';
import { notStartedProcess, type Backend, type RunIO, type StartedProcess } from '../types.js';
import type { CloudDetails, CloudOptions } from './index.js';
import { ServerRun } from './server-run.js';

/** Attempts at a request the server did not answer (it is restarting, the network dropped) before the start fails. */
const ATTEMPTS = 5;

/**
 * Sends the run to a qwexcloud server, like the ssh backend sends it to a
 * machine: the run's snapshot (already in the local content store) is
 * offered by content hash, only what the server lacks is uploaded, and the
 * run is submitted with its local run id as the idempotency key. `start` is
 * idempotent per run: a run an earlier supervisor submitted (found from the
 * record, or from the server by that key) is followed, never submitted
 * again. The token is read from the user's credentials for the server's URL
 * and is never recorded.
 */
export class CloudBackend implements Backend {
  readonly name = 'cloud';

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const options = job.backendOptions as CloudOptions;
    const login = requireLogin(options.url);
    const client = connection(login.url);
    let uploaded: CloudDetails['uploaded'];
    let run = await this.earlierSubmit(client, io);
    if (!run) {
      // Cancelled before anything was sent: nothing to find or stop on the server.
      io.signal.throwIfAborted();
      if (!job.workspace) throw new QwexError(ErrorCode.Internal, 'a cloud run was recorded without its workspace snapshot');
      const store = new ContentStore();
      const manifest = store.readManifest(job.workspace.manifest);
      uploaded = await retrying(() => client.uploadMissing(store, manifest, { signal: io.signal, ...(io.progress ? { progress: io.progress } : {}) }), io.signal);
      io.signal.throwIfAborted();
      const request = submitRequest(job, options, { files: manifest.files, symlinks: manifest.symlinks });
      // Not abortable once sent: a cancel from here on is a cancel of the server's run (the supervisor asks for it).
      run = await retrying(() => client.submit(request, { idempotencyKey: io.runId }));
    }
    const details = detailsOf(login.url, io.runId, run, uploaded);
    return new ServerRun({ client, dir: io.dir, details, seen: run, killGraceMs: job.killGraceMs, waitingOf });
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    const d = details as CloudDetails;
    if (typeof d.serverRunId !== 'string' || typeof d.server !== 'string') {
      return notStartedProcess({ exitCode: null, signal: null, lost: 'its record names no run on a server' });
    }
    let killGraceMs = 10_000;
    try {
      killGraceMs = readRunRecord(dir).job.killGraceMs;
    } catch {
      // the default grace, for a cancel
    }
    return new ServerRun({ client: connection(d.server), dir, details: { ...d, serverRunId: d.serverRunId }, killGraceMs, waitingOf });
  }

  /** The server's run of an earlier supervisor of this run: from its record, or from the server by the submit key. */
  private async earlierSubmit(client: CloudClient, io: RunIO): Promise<CloudRunDetail | undefined> {
    let recorded: CloudDetails = {};
    try {
      recorded = readRunRecord(io.dir).backend as CloudDetails;
    } catch {
      // no readable record: the server is asked
    }
    if (typeof recorded.serverRunId === 'string') return retrying(() => client.get(recorded.serverRunId!));
    try {
      return await retrying(() => client.submission(io.runId));
    } catch (error) {
      if (error instanceof QwexError && error.code === ErrorCode.NotFound) return undefined;
      throw error;
    }
  }
}

/** The job as the server takes it: the command, its own variables (not this machine's environment), and where. */
export function submitRequest(job: Job, options: CloudOptions, workspace: SubmitRequest['workspace']): SubmitRequest {
  const spec: CloudJobSpec = {
    command: job.shell ? (job.command[0] ?? '') : job.command,
    ...(job.shell ? { shell: true } : {}),
    env: job.env,
    ...(job.name === undefined ? {} : { name: job.name }),
    cwd: job.workspace?.cwd ?? '',
    watch: job.artifacts.watch,
    killGraceMs: job.killGraceMs,
    // The server stops it on time even while no supervisor here follows it (a laptop asleep).
    ...(job.timeoutMs === undefined ? {} : { timeoutMs: job.timeoutMs }),
    ...(options.container ? { container: options.container } : {}),
  };
  return {
    ...(options.target === undefined ? {} : { target: options.target }),
    ...(options.cluster === undefined ? {} : { cluster: options.cluster }),
    ...(options.queue === undefined ? {} : { queue: options.queue }),
    job: spec,
    ...(workspace === undefined ? {} : { workspace }),
  };
}

function detailsOf(server: string, key: string, run: CloudRunDetail, uploaded: CloudDetails['uploaded']): CloudDetails & { serverRunId: string } {
  return {
    server,
    submitKey: key,
    serverRunId: run.id,
    user: run.user,
    target: run.target,
    serverBackend: run.backend,
    cluster: run.cluster,
    queue: run.queue,
    serverStatus: run.status,
    waiting: isTerminal(run.status) ? null : waitingOf(run) ?? null,
    ...(uploaded ? { uploaded } : {}),
  };
}

/** What the server's run waits for, as the descriptor of the backend it runs on there reads its record. */
function waitingOf(run: CloudRunDetail): CloudDetails['waiting'] {
  return findBackend(run.backend)?.waiting?.(run.record);
}

/**
 * Retries what the server did not answer, or asked to be retried later (its
 * rate limit); never another answer, which stands. Safe for a submit: it
 * carries its idempotency key.
 */
async function retrying<T>(request: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await request();
    } catch (error) {
      const again = error instanceof QwexError && (error.details?.unreachable === true || error.code === ErrorCode.RateLimited);
      if (!again || attempt >= ATTEMPTS || signal?.aborted) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** attempt));
    }
  }
}

/**
 * A client of the server that reads the token stored for it at each
 * request: a `qwex login` made after the run started (a new token, or after
 * a logout) counts from the next request, and a `qwex logout` stops every
 * use of the token at once (requests then fail, and are retried).
 */
function connection(url: string): CloudClient {
  return new CloudClient({ url, token: () => requireLogin(url).token });
}
