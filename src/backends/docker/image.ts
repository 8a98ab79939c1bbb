import type Dockerode from 'dockerode';
import type { ContainerConfig } from '../../config/container.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { NO_PROGRESS, type Progress, type ProgressStep } from '../../progress.js';
import { untilAborted } from '../abort.js';
import { engineError, engineMessage, statusOf } from './engine.js';

/**
 * Makes sure the run's image is on the engine, as its pull policy says. A
 * pull stops as soon as `signal` aborts (a cancel while the run starts): the
 * request to the engine is aborted, which ends the engine's pull too.
 */
export async function ensureImage(docker: Dockerode, config: ContainerConfig, signal: AbortSignal, progress: Progress = NO_PROGRESS): Promise<void> {
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
  if (config.pull === 'always' || !present) {
    const step = progress.step(`pulling ${config.image}`, 'bytes');
    try {
      await untilAborted(pull(docker, config.image, signal, step), signal);
    } finally {
      step.end();
    }
  }
}

/** One event of the engine's pull stream: a layer's status, with its bytes once it downloads. */
export interface PullEvent {
  id?: string;
  status?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string };
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

async function pull(docker: Dockerode, image: string, signal: AbortSignal, step: ProgressStep): Promise<void> {
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
  const tally = pullTally();
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (error: Error | null, events: PullEvent[]) => {
        const last = events?.find((e) => e.error !== undefined);
        if (error || last) reject(failed(error ?? new Error(last?.errorDetail?.message ?? last?.error)));
        else resolve();
      },
      (event: PullEvent) => {
        const { done, total, layers } = tally.add(event);
        if (total > 0) step.set(done, { total, detail: `${layers} layer${layers === 1 ? '' : 's'}` });
      },
    );
  });
}
