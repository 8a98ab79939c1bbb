import { relative } from 'node:path';
import type Dockerode from 'dockerode';
import { executable } from '../../config/command.js';
import { CONTAINER_WORKSPACE, type ContainerConfig, type ResourceRequirements } from '../../config/container.js';
import { ErrorCode, QwexError } from '../../errors.js';
import type { Job } from '../../run/model.js';
import { notStartedProcess, type RunIO, type StartedProcess } from '../types.js';
import { engineError, engineMessage, inspectQuietly, type EngineContainer } from './engine.js';

/** Labels on every container qwex creates: how `qwex doctor` and adoption find them. */
export const LABEL_RUN_ID = 'qwex.run-id';
export const LABEL_PROJECT = 'qwex.project';
export const LABEL_RUN_DIR = 'qwex.run-dir';

/** The container of a run: its name is derived from the run id, so it can be found from the record alone (and a second start finds the first's). */
export function containerName(runId: string): string {
  return `qwex-${runId}`;
}

/**
 * What the engine is asked to create: the user's command directly in the
 * user's image (nothing of qwex is mounted into it), the workspace
 * bind-mounted at /workspace, as the invoking user's uid:gid unless told
 * otherwise.
 */
export function containerSpec(job: Job, io: RunIO, config: ContainerConfig): Dockerode.ContainerCreateOptions {
  const { file, args } = executable(job);
  const user = config.user ?? invokingUser();
  return {
    name: containerName(io.runId),
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
  };
}

/**
 * Starts a created container. Undefined once it runs; a settled process
 * when the OCI runtime could not execute the command (the shell's 127/126,
 * recorded as the run's end). Anything else the engine refuses throws.
 */
export async function startCreated(container: EngineContainer, job: Job, config: ContainerConfig): Promise<StartedProcess | undefined> {
  try {
    await container.start();
    return undefined;
  } catch (error) {
    const info = await inspectQuietly(container);
    await container.remove({ force: true }).catch(() => {
      // gone already, or the engine is away: `qwex doctor` lists what is left
    });
    const message = engineMessage(error);
    const { file } = executable(job);
    // The OCI runtime reports a command it cannot execute before anything runs: the shell's 127/126.
    if (/executable file not found|no such file or directory/i.test(message)) {
      return notStartedProcess({ exitCode: 127, signal: null, error: { code: ErrorCode.CommandNotFound, message: `command not found in ${config.image}: ${file}` } });
    }
    if (/permission denied/i.test(message) && info !== 'gone' && info?.State.ExitCode === 126) {
      return notStartedProcess({ exitCode: 126, signal: null, error: { code: ErrorCode.CommandNotExecutable, message: `permission denied in ${config.image}: ${file}` } });
    }
    throw engineError(error, `cannot start the container for ${config.image}`, ErrorCode.ContainerFailed);
  }
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
    const request = r.gpus === 'all' ? { Count: -1 } : typeof r.gpus === 'number' ? { Count: r.gpus } : { DeviceIDs: r.gpus };
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
