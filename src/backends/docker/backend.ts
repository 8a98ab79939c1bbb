import { join, relative } from 'node:path';
import type Dockerode from 'dockerode';
import { executable } from '../../config/command.js';
import { CONTAINER_WORKSPACE, type ContainerConfig, type ResourceRequirements } from '../../config/container.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { RunFiles } from '../../paths.js';
import type { Job } from '../../run/model.js';
import { ContainerLogCopy } from './logs.js';
import { notStartedProcess, type Backend, type ExitInfo, type RunIO, type StartedProcess } from '../types.js';

/** Labels on every container qwex creates: how `qwex doctor` and adoption find them. */
export const LABEL_RUN_ID = 'qwex.run-id';
export const LABEL_PROJECT = 'qwex.project';
export const LABEL_RUN_DIR = 'qwex.run-dir';

/** How long to wait before asking the engine again when waiting for a container failed (the engine restarted). */
const WAIT_RETRY_MS = 1000;

/**
 * Runs the command in a container on a Docker engine, with dockerode: the
 * user's command runs directly in the user's image (nothing of qwex is
 * mounted into it), in the project (or the run's copy of it) bind-mounted
 * at /workspace, as the invoking user's uid:gid unless told otherwise.
 *
 * The engine is the daemon of record: the container keeps running if qwex
 * goes away, and `adopt` finds it again by its name (`qwex-<run id>`). Its
 * output is copied from the engine into stdout.log/stderr.log by whoever
 * supervises the run (see docker-logs.ts for why a resumed copy is exact).
 * The container is removed only after the run's record is final (`release`).
 */
export class DockerBackend implements Backend {
  readonly name = 'docker';
  readonly outputNeedsSupervisor = true;

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const config = job.container;
    if (!config) throw new QwexError(ErrorCode.Internal, 'a docker run was recorded without its container settings');
    const docker = await connect();
    await ensureImage(docker, config);
    const name = containerName(io.runId);
    const { file, args } = executable(job);
    const user = config.user ?? invokingUser();
    let container: Dockerode.Container;
    try {
      container = await docker.createContainer({
        name,
        Image: config.image,
        Cmd: [file, ...args],
        Env: Object.entries(containerEnv(job, io, config)).map(([k, v]) => `${k}=${v}`),
        WorkingDir: containerPath(io.root, job.cwd),
        ...(user === undefined ? {} : { User: user }),
        Labels: { [LABEL_RUN_ID]: io.runId, [LABEL_PROJECT]: io.project, [LABEL_RUN_DIR]: io.dir },
        AttachStdin: false,
        AttachStdout: false,
        AttachStderr: false,
        Tty: false,
        OpenStdin: false,
        HostConfig: {
          Mounts: [
            { Type: 'bind', Source: io.root, Target: CONTAINER_WORKSPACE, ReadOnly: false },
            ...config.mounts.map((m) => ({ Type: 'bind' as const, Source: m.source, Target: m.target, ReadOnly: m.readonly })),
          ],
          // A tiny init as PID 1 passes signals on and reaps: `sh -c` as PID 1 would ignore SIGTERM.
          Init: true,
          // qwex reads the output back through the engine. The `local` driver keeps bytes as they were
          // (json-file stores JSON strings, which mangle output that is not UTF-8); no rotation, so a
          // copy resumed after qwex was away still finds the first byte. The container's removal frees it.
          LogConfig: { Type: 'local', Config: { 'max-size': '1t', compress: 'false' } },
          ...(config.network === undefined ? {} : { NetworkMode: config.network }),
          ...hostResources(config.resources),
        },
      });
    } catch (error) {
      throw engineError(error, `cannot create the container for ${config.image}`, ErrorCode.ContainerFailed);
    }
    try {
      await container.start();
    } catch (error) {
      const info = await inspectQuietly(container);
      await container.remove({ force: true }).catch(() => {});
      const message = engineMessage(error);
      // The OCI runtime reports a command it cannot execute before anything runs: the shell's 127/126.
      if (/executable file not found|no such file or directory/i.test(message)) {
        return notStartedProcess({ exitCode: 127, signal: null, error: { code: ErrorCode.CommandNotFound, message: `command not found in ${config.image}: ${file}` } });
      }
      if (/permission denied/i.test(message) && info !== 'gone' && info?.State.ExitCode === 126) {
        return notStartedProcess({ exitCode: 126, signal: null, error: { code: ErrorCode.CommandNotExecutable, message: `permission denied in ${config.image}: ${file}` } });
      }
      throw engineError(error, `cannot start the container for ${config.image}`, ErrorCode.ContainerFailed);
    }
    const details = { container: name, containerId: container.id, image: config.image, engine: engineEndpoint() };
    return followContainer(() => Promise.resolve(container), details, io.stdoutPath, io.stderrPath);
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    const name = typeof details.containerId === 'string' ? details.containerId : typeof details.container === 'string' ? details.container : undefined;
    const paths = { stdout: join(dir, RunFiles.stdout), stderr: join(dir, RunFiles.stderr) };
    if (name === undefined) {
      return notStartedProcess({ exitCode: null, signal: null, lost: 'its record names no container' });
    }
    let docker: Dockerode | undefined;
    const getContainer = async (): Promise<Dockerode.Container> => (docker ??= await connect()).getContainer(name);
    return followContainer(getContainer, details, paths.stdout, paths.stderr);
  }
}

/** The container of a run: its name is derived from the run id, so it can be found from the record alone. */
export function containerName(runId: string): string {
  return `qwex-${runId}`;
}

/** Where the engine is, as a user would name it in DOCKER_HOST. */
export function engineEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
}

/** A client for the engine named by DOCKER_HOST (or the default socket), checked to answer. */
export async function connect(): Promise<Dockerode> {
  const { default: Docker } = await import('dockerode');
  const docker = new Docker();
  try {
    await docker.ping();
  } catch (error) {
    throw unreachable(error);
  }
  return docker;
}

/**
 * Follows a container: copies its output and learns its end. `getContainer`
 * is retried until it answers (an adopted run whose engine is restarting).
 */
function followContainer(getContainer: () => Promise<Dockerode.Container>, details: Record<string, unknown>, stdoutPath: string, stderrPath: string): StartedProcess {
  let result: ExitInfo | undefined;
  let disposed = false;
  let copy: ContainerLogCopy | undefined;
  let stream: (NodeJS.ReadableStream & { destroy(): void }) | undefined;
  const name = String(details.container ?? details.containerId);

  const containerP = (async (): Promise<Dockerode.Container | undefined> => {
    for (;;) {
      if (disposed) return undefined;
      try {
        return await getContainer();
      } catch {
        await sleep(WAIT_RETRY_MS);
      }
    }
  })();

  // The copy and the wait start when someone waits for the end, not when a run is merely looked
  // at (`state`): two copiers of one container would both append its output.
  const copyOutput = async (): Promise<void> => {
    const container = await containerP;
    if (!container || disposed) return;
    copy = new ContainerLogCopy(stdoutPath, stderrPath);
    // follow=true with no `since`: from the container's first byte; the copy skips what is already here.
    const logs = (await container.logs({ follow: true, stdout: true, stderr: true })) as unknown as NodeJS.ReadableStream & { destroy(): void };
    stream = logs;
    if (disposed) return logs.destroy();
    await new Promise<void>((resolve) => {
      logs.on('data', (chunk: Buffer) => copy?.push(chunk));
      logs.on('end', resolve);
      logs.on('close', resolve);
      logs.on('error', () => resolve());
    });
  };

  let exited: Promise<ExitInfo> | undefined;
  const copyToEnd = (): Promise<ExitInfo> =>
    (exited ??= (async (): Promise<ExitInfo> => {
      const copied = copyOutput();
      const container = await containerP;
      if (!container) return new Promise<ExitInfo>(() => {}); // disposed: whoever looks next finds out
      const info = await waitForEnd(container, name, () => disposed);
      if (info.lost === undefined) await copied.catch(() => {});
      copy?.close();
      result = info;
      return info;
    })());

  return {
    spawned: true,
    details,
    get exited() {
      return copyToEnd();
    },
    signal: (sig) => {
      void containerP.then((c) => c?.kill({ signal: sig })).catch(() => {
        // not running any more (409) or gone (404): nothing to signal
      });
    },
    state: async () => {
      if (result) return result;
      let info: Awaited<ReturnType<typeof inspectQuietly>>;
      try {
        info = await inspectQuietly(await getContainer());
      } catch {
        return undefined; // no engine now: not known to have ended
      }
      if (info === 'gone') return copyToEnd();
      if (info === undefined || info.State.Running || info.State.Status === 'created' || info.State.Restarting) return undefined;
      return copyToEnd();
    },
    release: async () => {
      try {
        await (await getContainer()).remove({ force: true });
      } catch {
        // already gone, or the engine is away: `qwex doctor` lists what is left
      }
    },
    dispose: () => {
      disposed = true;
      stream?.destroy();
      copy?.close();
    },
  };
}

/** Waits for the container to stop and reads how it ended; retries when the engine went away meanwhile. */
async function waitForEnd(container: Dockerode.Container, name: string, disposed: () => boolean): Promise<ExitInfo> {
  for (;;) {
    try {
      await container.wait();
    } catch (error) {
      if (statusOf(error) === 404) return goneInfo(name);
      await sleep(WAIT_RETRY_MS);
    }
    if (disposed()) return new Promise<ExitInfo>(() => {});
    const info = await inspectQuietly(container);
    if (info === 'gone') return goneInfo(name);
    if (info === undefined || info.State.Running || info.State.Restarting) continue;
    return exitInfoOf(info);
  }
}

function exitInfoOf(info: Dockerode.ContainerInspectInfo): ExitInfo {
  const finished = Date.parse(info.State.FinishedAt);
  const endedAt = Number.isNaN(finished) || finished <= 0 ? {} : { endedAt: new Date(finished) };
  if (info.State.OOMKilled) {
    return {
      exitCode: info.State.ExitCode,
      signal: null,
      error: { code: ErrorCode.OutOfMemory, message: 'the engine killed the container: it ran out of memory (see the memory limit)' },
      ...endedAt,
    };
  }
  return { exitCode: info.State.ExitCode, signal: null, ...endedAt };
}

function goneInfo(name: string): ExitInfo {
  return { exitCode: null, signal: null, lost: `its container ${name} was removed before its end was recorded` };
}

async function inspectQuietly(container: Dockerode.Container): Promise<Dockerode.ContainerInspectInfo | 'gone' | undefined> {
  try {
    return await container.inspect();
  } catch (error) {
    return statusOf(error) === 404 ? 'gone' : undefined;
  }
}

async function ensureImage(docker: Dockerode, config: ContainerConfig): Promise<void> {
  const present = await docker
    .getImage(config.image)
    .inspect()
    .then(
      () => true,
      (error: unknown) => {
        if (statusOf(error) === 404) return false;
        throw engineError(error, `cannot look up the image ${config.image}`, ErrorCode.BackendUnavailable);
      },
    );
  if (config.pull === 'never' && !present) {
    throw new QwexError(ErrorCode.ImageNotFound, `the image ${config.image} is not on the Docker engine and the pull policy is "never"`, {
      hint: `build or load it (docker build / docker load / docker pull ${config.image}), or use --pull missing`,
    });
  }
  if (config.pull === 'always' || !present) await pull(docker, config.image);
}

async function pull(docker: Dockerode, image: string): Promise<void> {
  const failed = (error: unknown): QwexError =>
    new QwexError(ErrorCode.ImagePullFailed, `cannot pull ${image}: ${engineMessage(error)}`, {
      hint: 'check the image name and that the registry is reachable (and `docker login` for a private one); --pull never uses only local images',
    });
  let stream: NodeJS.ReadableStream;
  try {
    stream = (await docker.pull(image)) as NodeJS.ReadableStream;
  } catch (error) {
    throw failed(error);
  }
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (error: Error | null, events: { error?: string; errorDetail?: { message?: string } }[]) => {
        const last = events?.find((e) => e.error !== undefined);
        if (error || last) reject(failed(error ?? new Error(last?.errorDetail?.message ?? last?.error)));
        else resolve();
      },
    );
  });
}

/** The container's environment: the image's own, then the config's, the job's, and qwex's. The host's is not passed in. */
function containerEnv(job: Job, io: RunIO, config: ContainerConfig): Record<string, string> {
  return {
    ...config.env,
    ...job.env,
    PYTHONUNBUFFERED: job.env.PYTHONUNBUFFERED ?? config.env.PYTHONUNBUFFERED ?? '1',
    QWEX_RUN_ID: io.runId,
  };
}

function hostResources(r: ResourceRequirements): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (r.cpus !== undefined) out.NanoCpus = Math.round(r.cpus * 1e9);
  if (r.memoryBytes !== undefined) out.Memory = r.memoryBytes;
  if (r.gpus !== undefined) {
    const request =
      r.gpus === 'all'
        ? { Count: -1 }
        : typeof r.gpus === 'number'
          ? { Count: r.gpus }
          : { DeviceIDs: r.gpus };
    out.DeviceRequests = [{ Driver: '', Capabilities: [['gpu']], ...request }];
  }
  return out;
}

/** The working directory in the container: the same place under /workspace as job.cwd under the root. */
function containerPath(root: string, cwd: string): string {
  const rel = relative(root, cwd);
  if (rel.startsWith('..')) {
    throw new QwexError(ErrorCode.Usage, `the working directory ${cwd} is outside the mounted project ${root}`, { hint: 'run qwex from inside the project' });
  }
  return rel === '' ? CONTAINER_WORKSPACE : `${CONTAINER_WORKSPACE}/${rel.split('\\').join('/')}`;
}

function invokingUser(): string | undefined {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  return uid === undefined || gid === undefined ? undefined : `${uid}:${gid}`;
}

function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The engine's own words: its JSON `message`, else the error's. */
function engineMessage(error: unknown): string {
  const json = (error as { json?: { message?: unknown } } | null)?.json;
  if (json && typeof json.message === 'string') return json.message.trim();
  return (error as Error)?.message?.replace(/^\(HTTP code \d+\) [a-z ]+ - /, '').trim() ?? String(error);
}

function engineError(error: unknown, what: string, code: ErrorCode): QwexError {
  if (statusOf(error) === undefined) return unreachable(error);
  return new QwexError(code, `${what}: ${engineMessage(error)}`, { cause: error });
}

function unreachable(error: unknown): QwexError {
  const where = engineEndpoint();
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'EACCES') {
    return new QwexError(ErrorCode.BackendUnavailable, `permission denied on the Docker engine's socket (${where})`, {
      hint: 'add yourself to the docker group (sudo usermod -aG docker $USER, then log in again), or set DOCKER_HOST to an engine you may use',
    });
  }
  return new QwexError(ErrorCode.BackendUnavailable, `no Docker engine answers at ${where}${typeof code === 'string' ? ` (${code})` : ''}`, {
    hint: 'start it (sudo systemctl start docker, or scripts/provision-docker.sh), or set DOCKER_HOST to where it listens',
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
