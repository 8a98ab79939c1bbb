import type { ContainerConfig } from '../../config/container.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { untilAborted } from '../abort.js';
import { engineMessage, type Engine } from './engine.js';

/**
 * The run's image, as its pull policy says. The engine is not asked
 * beforehand whether it has the image: creating the container tells (a 404),
 * and only then is it pulled (`missing`) or the run refused (`never`);
 * `always` pulls first. A pull stops as soon as `signal` aborts (a cancel
 * while the run starts): the request to the engine is aborted, which ends
 * the engine's pull too.
 */
export function missingImage(config: ContainerConfig): QwexError {
  return new QwexError(ErrorCode.ImageNotFound, `the image ${config.image} is not on the Docker engine and the pull policy is "never"`, {
    hint: `build or load it (docker build / docker load / docker pull ${config.image}), or use --pull missing`,
  });
}

export async function pullImage(docker: Engine, image: string, signal: AbortSignal): Promise<void> {
  const pulled = docker.pull(image, signal).catch((error: unknown) => {
    if (signal.aborted) throw error;
    throw new QwexError(ErrorCode.ImagePullFailed, `cannot pull ${image}: ${engineMessage(error)}`, {
      hint: 'check the image name and that the registry is reachable (and `docker login` for a private one); --pull never uses only local images',
    });
  });
  await untilAborted(pulled, signal);
}
