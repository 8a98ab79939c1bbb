import type Dockerode from 'dockerode';
import type { ContainerConfig } from '../../config/container.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { untilAborted } from '../abort.js';
import { engineError, engineMessage, statusOf } from './engine.js';

/**
 * Makes sure the run's image is on the engine, as its pull policy says. A
 * pull stops as soon as `signal` aborts (a cancel while the run starts): the
 * request to the engine is aborted, which ends the engine's pull too.
 */
export async function ensureImage(docker: Dockerode, config: ContainerConfig, signal: AbortSignal): Promise<void> {
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
  if (config.pull === 'always' || !present) await untilAborted(pull(docker, config.image, signal), signal);
}

async function pull(docker: Dockerode, image: string, signal: AbortSignal): Promise<void> {
  const failed = (error: unknown): QwexError =>
    new QwexError(ErrorCode.ImagePullFailed, `cannot pull ${image}: ${engineMessage(error)}`, {
      hint: 'check the image name and that the registry is reachable (and `docker login` for a private one); --pull never uses only local images',
    });
  let stream: NodeJS.ReadableStream;
  try {
    stream = (await docker.pull(image, { abortSignal: signal })) as NodeJS.ReadableStream;
  } catch (error) {
    throw failed(error);
  }
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (error: Error | null, events: { error?: string; errorDetail?: { message?: string } }[]) => {
      const last = events?.find((e) => e.error !== undefined);
      if (error || last) reject(failed(error ?? new Error(last?.errorDetail?.message ?? last?.error)));
      else resolve();
    });
  });
}
