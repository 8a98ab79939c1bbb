import type { Run } from '../src/run/model.js';
import type { Context } from './context.js';

export interface AttachOptions {
  onStdout: (chunk: Buffer) => Promise<void>;
  onStderr: (chunk: Buffer) => Promise<void>;
  /** Aborting detaches: the run goes on, and the record as it is then is returned. */
  signal: AbortSignal;
}

/**
 * Replays a run's output from the start, streams it live, and resolves with
 * the final record once the run ended and both logs are drained.
 *
 * The CLI reads the run's log files itself, with or without qwexd: every
 * backend writes its output into the local run directory, and raw file reads
 * are many times faster than the JSON-RPC log stream (base64 in JSON; see
 * bench/results), which is there for other programs and remote clients.
 * The end of the run comes from run.json, reconciled if its supervisor died.
 */
export function attach(ctx: Context, dir: string, options: AttachOptions): Promise<Run> {
  return ctx.watcher.follow(dir, {
    onStdout: options.onStdout,
    onStderr: options.onStderr,
    refresh: (d) => ctx.runner.reconcile(d),
    signal: options.signal,
  });
}
