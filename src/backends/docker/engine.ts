import type Dockerode from 'dockerode';
import { ErrorCode, QwexError } from '../../errors.js';

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

/** A container's state, 'gone' when the engine does not have it, undefined when the engine did not answer. */
export async function inspectQuietly(container: Dockerode.Container): Promise<Dockerode.ContainerInspectInfo | 'gone' | undefined> {
  try {
    return await container.inspect();
  } catch (error) {
    return statusOf(error) === 404 ? 'gone' : undefined;
  }
}

export function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The engine's own words: its JSON `message`, else the error's. */
export function engineMessage(error: unknown): string {
  const json = (error as { json?: { message?: unknown } } | null)?.json;
  if (json && typeof json.message === 'string') return json.message.trim();
  return (error as Error)?.message?.replace(/^\(HTTP code \d+\) [a-z ]+ - /, '').trim() ?? String(error);
}

export function engineError(error: unknown, what: string, code: ErrorCode): QwexError {
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
