import { ErrorCode, QwexError } from '../errors.js';
import type { Run } from '../run/model.js';
import { describeRequest, runsHere } from './request.js';

/**
 * The GPU variables of a command that runs on this machine: the UUIDs of
 * the GPUs its record holds in CUDA_VISIBLE_DEVICES (UUIDs, because indexes
 * change when devices are reordered or hidden) and their indexes in
 * QWEX_GPUS; a run that holds none sees none (`CUDA_VISIBLE_DEVICES=`),
 * unless its job may see all or sets the variable itself. Changes `env`.
 * Throws when the run asks for GPUs that nobody handed to it: only qwexd's
 * ledger hands them out, and a run without it must not take them all.
 */
export function applyGpuEnvironment(run: Run, env: Record<string, string>): void {
  if (!runsHere(run.job.backend)) return;
  const gpus = run.gpus ?? [];
  if (gpus.length > 0) {
    env.CUDA_VISIBLE_DEVICES = gpus.map((g) => g.uuid).join(',');
    env.QWEX_GPUS = gpus.map((g) => g.index).join(',');
    return;
  }
  if (run.job.gpus !== undefined) {
    throw new QwexError(ErrorCode.NotStarted, `the run asks for ${describeRequest(run.job.gpus)} of this machine, which only qwexd hands out, and it was started without qwexd`, {
      hint: 'start qwexd (qwex daemon start) and submit it again; QWEX_NO_DAEMON=1 runs cannot ask for GPUs',
    });
  }
  env.QWEX_GPUS = '';
  if (run.job.allGpusVisible === true || Object.hasOwn(run.job.env, 'CUDA_VISIBLE_DEVICES')) return;
  env.CUDA_VISIBLE_DEVICES = '';
}
