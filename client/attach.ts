import type { DaemonClient, NotificationMessage } from '../src/daemon-client.js';
import { Method, Notification, type LogDataParams, type LogEndParams } from '../src/protocol.js';
import { isTerminal, type Run } from '../src/run.js';
import type { Context } from './context.js';

export interface AttachOptions {
  onStdout: (chunk: Buffer) => Promise<void>;
  onStderr: (chunk: Buffer) => Promise<void>;
  /** Aborting detaches: the run goes on, and the record as it is then is returned. */
  signal: AbortSignal;
}

/**
 * Replays a run's output from the start, streams it live, and resolves with
 * the final record once the run ended and both logs are drained. Through
 * qwexd's log subscription when it runs, else by following the log files.
 */
export async function attach(ctx: Context, dir: string, runId: string, options: AttachOptions): Promise<Run> {
  const daemon = await ctx.daemon();
  const offsets = { stdout: 0, stderr: 0 };
  if (daemon) {
    const run = await attachThroughDaemon(daemon, runId, options, offsets, () => ctx.watcher.read(dir));
    // qwexd went away (shutdown, crash) while the run goes on: carry on from the files, from where it stopped.
    if (isTerminal(run.status) || options.signal.aborted) return run;
  }
  return ctx.watcher.follow(dir, {
    onStdout: options.onStdout,
    onStderr: options.onStderr,
    stdoutOffset: offsets.stdout,
    stderrOffset: offsets.stderr,
    refresh: (d) => ctx.runner.reconcile(d),
    signal: options.signal,
  });
}

/**
 * Follows a run through qwexd. Resolves with the record when the
 * subscription ends, for whatever reason (the run ended, qwexd shut down or
 * the connection broke); `offsets` says how far each stream got.
 */
function attachThroughDaemon(
  daemon: DaemonClient,
  runId: string,
  options: AttachOptions,
  offsets: { stdout: number; stderr: number },
  readRecord: () => Run,
): Promise<Run> {
  return new Promise<Run>((resolve, reject) => {
    let subscription: string | undefined;
    let writing: Promise<void> = Promise.resolve();
    // Notifications that arrive before the subscribe reply names their subscription wait here.
    const early: NotificationMessage[] = [];
    const handle = (note: NotificationMessage): void => {
      if (subscription === undefined) {
        early.push(note);
        return;
      }
      if (note.method === Notification.logData) {
        const data = note.params as LogDataParams;
        if (data.subscription !== subscription) return;
        const chunk = Buffer.from(data.data, 'base64');
        offsets[data.stream] = data.offset + chunk.length;
        const write = data.stream === 'stdout' ? options.onStdout : options.onStderr;
        // Keep order, and stop reading from qwexd while the terminal is slower than the run.
        daemon.pause();
        writing = writing.then(() => write(chunk)).finally(() => daemon.resume());
      } else if (note.method === Notification.logEnd) {
        const end = note.params as LogEndParams;
        if (end.subscription !== subscription) return;
        stop();
        void writing.then(() => resolve(end.run));
      }
    };
    const stop = daemon.onNotification(handle);
    const onAbort = (): void => {
      if (subscription === undefined) return;
      daemon.request(Method.unsubscribe, { subscription }).catch(() => {});
    };
    options.signal.addEventListener('abort', onAbort, { once: true });
    daemon.request(Method.subscribe, { id: runId }).then(
      (result) => {
        subscription = result.subscription;
        for (const note of early.splice(0)) handle(note);
        if (options.signal.aborted) onAbort();
      },
      (error: unknown) => {
        stop();
        reject(error);
      },
    );
    // A broken connection ends the subscription too: report the record as it is on disk.
    daemon.onClose(() => {
      stop();
      void writing.then(() => resolve(readRecord()));
    });
  });
}
