import type { ContainerConfig } from '../../config/container.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { NO_PROGRESS, type Progress } from '../../progress.js';
import { untilAborted } from '../abort.js';
import { engineMessage, type Engine, type PullEvent } from './engine.js';

/**
 * The run's image, as its pull policy says. The engine is not asked
 * beforehand whether it has the image: creating the container tells (a 404),
 * and only then is it pulled (`missing`) or the run refused (`never`);
 * `always` pulls first. A pull stops as soon as `signal` aborts (a cancel
 * while the run starts): the request to the engine is aborted, which ends
 * the engine's pull too.
 */

/** The refusal of a run whose image the engine lacks under the pull policy `never`. */
export function missingImage(config: ContainerConfig): QwexError {
  return new QwexError(ErrorCode.ImageNotFound, `the image ${config.image} is not on the Docker engine and the pull policy is "never"`, {
    hint: `build or load it (docker build / docker load / docker pull ${config.image}), or use --pull missing`,
  });
}

/** Pulls `image`, reporting its download as one step of `progress` (bytes of every layer, summed). */
export async function pullImage(docker: Engine, image: string, signal: AbortSignal, progress: Progress = NO_PROGRESS): Promise<void> {
  const step = progress.step(`pulling ${image}`, 'bytes');
  const tally = pullTally();
  const onEvent = (event: PullEvent): void => {
    const { done, total, layers } = tally.add(event);
    if (total > 0) step.set(done, { total, detail: `${layers} layer${layers === 1 ? '' : 's'}` });
  };
  const pulled = docker.pull(image, signal, onEvent).catch((error: unknown) => {
    if (signal.aborted) throw error;
    throw new QwexError(ErrorCode.ImagePullFailed, `cannot pull ${image}: ${engineMessage(error)}`, {
      hint: 'check the image name and that the registry is reachable (and `docker login` for a private one); --pull never uses only local images',
    });
  });
  try {
    await untilAborted(pulled, signal);
  } finally {
    step.end();
  }
}

/**
 * The download of a pull as one count: each layer's bytes downloaded out of
 * its size, summed (the engine reports layers separately, and learns their
 * sizes as it goes: the total grows at first).
 */
export function pullTally(): { add(event: PullEvent): { done: number; total: number; layers: number } } {
  const layers = new Map<string, { done: number; total: number }>();
  return {
    add(event) {
      if (event.id !== undefined) {
        const layer = layers.get(event.id) ?? { done: 0, total: 0 };
        const { current, total } = event.progressDetail ?? {};
        if (event.status === 'Downloading' && typeof total === 'number' && total > 0) {
          layer.total = total;
          layer.done = Math.min(total, current ?? 0);
        } else if (event.status === 'Download complete' || event.status === 'Pull complete') {
          layer.done = layer.total;
        }
        layers.set(event.id, layer);
      }
      let done = 0;
      let total = 0;
      for (const layer of layers.values()) {
        done += layer.done;
        total += layer.total;
      }
      return { done, total, layers: layers.size };
    },
  };
}
