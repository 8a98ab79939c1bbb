import { closeSync, fstatSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { CloudRunDetail, LogStream } from '../../cloud/api.js';
import type { CloudClient } from '../../cloud/client.js';
import { ErrorCode, QwexError } from '../../errors.js';
import { writeAll } from '../../fs-atomic.js';
import { RunFiles } from '../../paths.js';
import { isTerminal, type RunStatus } from '../../run/model.js';
import type { ArtifactManifest } from '../../workspace/artifacts.js';
import type { ExitInfo, StartedProcess } from '../types.js';
import { downloadArtifacts } from './artifacts.js';
import type { CloudDetails } from './index.js';

/** Between attempts to reach the server again (doubling up to the maximum). */
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;
/** Attempts at a cancel the server did not answer. */
const CANCEL_ATTEMPTS = 5;

export interface ServerRunOptions {
  /** A client of the server that reads the user's token at each request (QWEX_UNAUTHORIZED while logged out: retried later). */
  client: CloudClient;
  /** The local run directory: stdout.log and stderr.log are appended to there. */
  dir: string;
  details: CloudDetails & { serverRunId: string };
  /** The run as the server showed it just now (a start); absent for an adoption from the record alone. */
  seen?: CloudRunDetail;
  /** Between SIGTERM and SIGKILL when the run is cancelled (the job's own). */
  killGraceMs: number;
  /** What the server's record says of where it waits (its backend's descriptor reads it). */
  waitingOf: (run: CloudRunDetail) => CloudDetails['waiting'];
}

/**
 * A run on a qwexcloud server, as this machine follows it. Its output is
 * copied from the server's log streams (Server-Sent Events) into the local
 * stdout.log and stderr.log, each resumed from the byte the local file ends
 * at, so a cut connection or a new supervisor loses and doubles nothing.
 * Copying starts only when someone waits for the end (`exited`): the claim
 * holder, the one writer of the run directory. The end is the server's;
 * cancel is a request to the server. Never holds or shows the token.
 */
export class ServerRun implements StartedProcess {
  readonly spawned = true;
  readonly details: CloudDetails;
  readonly running: Promise<void> | undefined;
  private markRunning: (() => void) | undefined;
  private watching = false;
  private readonly id: string;
  private readonly stop = new AbortController();
  private readonly listeners = new Set<(patch: Record<string, unknown>) => void>();
  private copying: Promise<ExitInfo> | undefined;
  private result: ExitInfo | undefined;
  private cancelling: Promise<void> | undefined;
  private status: RunStatus;
  private problem: string | null = null;

  constructor(private readonly options: ServerRunOptions) {
    this.details = options.details;
    this.id = options.details.serverRunId;
    this.status = options.seen?.status ?? options.details.serverStatus ?? 'running';
    if (options.seen?.status === 'pending') {
      // Settles once the server runs the command (or it ended having run); never, if it ended without running.
      this.running = new Promise<void>((resolve) => (this.markRunning = resolve));
      this.watch();
    }
  }

  get exited(): Promise<ExitInfo> {
    this.watch();
    return (this.copying ??= this.copyToEnd());
  }

  signal(signal: NodeJS.Signals): void {
    // A terminal closing (SIGHUP) does not stop a run on a server; a stop does.
    if (signal !== 'SIGTERM' && signal !== 'SIGINT' && signal !== 'SIGKILL') return;
    const graceMs = signal === 'SIGKILL' ? 0 : this.options.killGraceMs;
    if (this.cancelling && signal !== 'SIGKILL') return;
    this.cancelling = this.cancel(graceMs);
  }

  async state(): Promise<ExitInfo | undefined> {
    if (this.result) return this.result;
    try {
      const run = await this.options.client.get(this.id);
      return isTerminal(run.status) ? exitOf(run) : undefined;
    } catch (error) {
      if (error instanceof QwexError && error.code === ErrorCode.RunNotFound) return lostRun(this.id);
      return undefined;
    }
  }

  /** The rest of the logs (a look that found the run ended copies nothing: this runs under the claim), then the artifacts. */
  async collectArtifacts(target: { runId: string; runDir: string }): Promise<ArtifactManifest> {
    for (const stream of ['stdout', 'stderr'] as const) await this.drain(stream);
    return downloadArtifacts(this.options.client, this.id, target);
  }

  onDetails(listener: (patch: Record<string, unknown>) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async release(): Promise<void> {
    // Nothing of the run is this machine's to remove (the server keeps its history); its watch of the feed ends.
    this.stop.abort();
  }

  dispose(): void {
    this.stop.abort();
    this.listeners.clear();
  }

  private patch(patch: Partial<CloudDetails>): void {
    Object.assign(this.details, patch);
    for (const listener of this.listeners) listener(patch as Record<string, unknown>);
  }

  private noteProblem(error: unknown): void {
    const text = error instanceof QwexError && error.code === ErrorCode.Unauthorized
      ? `${error.message}: the run goes on there, and is followed again after qwex login ${this.details.server ?? 'URL'}`
      : `cannot follow the run on the server: ${(error as Error).message}`;
    if (text === this.problem) return;
    this.problem = text;
    this.patch({ problem: text });
  }

  private clearProblem(): void {
    if (this.problem === null) return;
    this.problem = null;
    this.patch({ problem: null });
  }

  private seen(run: CloudRunDetail): void {
    // What it waits for is the server's backend's to say (a kueue run is running there while Kueue holds its Job).
    const waiting = isTerminal(run.status) ? null : this.options.waitingOf(run) ?? null;
    if (run.status !== 'pending' && (run.status === 'running' || run.startedAt !== null)) this.markRunning?.();
    if (run.status === this.status && JSON.stringify(waiting) === JSON.stringify(this.details.waiting ?? null)) return;
    this.status = run.status;
    this.patch({ serverStatus: run.status, waiting });
  }

  /**
   * Keeps the record's view of the server's run current (its status, what
   * it waits for) until it ends: a look at the run after each change the
   * server's change feed reports for it, and after each (re)connection.
   * Started by whoever supervises the run, never by a mere look (`state`).
   */
  private watch(): void {
    if (this.watching) return;
    this.watching = true;
    void (async () => {
      let delay = RETRY_MIN_MS;
      let lastEventId: string | undefined;
      while (!this.stop.signal.aborted && !isTerminal(this.status)) {
        const feed = new AbortController();
        const onStop = (): void => feed.abort();
        this.stop.signal.addEventListener('abort', onStop);
        const look = async (): Promise<void> => {
          this.seen(await this.options.client.get(this.id));
          if (isTerminal(this.status)) feed.abort();
        };
        try {
          lastEventId = await this.options.client.events({
            signal: feed.signal,
            ...(lastEventId === undefined ? {} : { lastEventId }),
            onOpen: () => void look().catch(() => {}),
            onRun: (run) => {
              if (run.id === this.id) void look().catch(() => {});
            },
            onReset: () => void look().catch(() => {}),
          });
          delay = RETRY_MIN_MS;
        } catch {
          // the feed dropped: the look on reconnecting catches up
        } finally {
          this.stop.signal.removeEventListener('abort', onStop);
        }
        if (this.stop.signal.aborted || isTerminal(this.status)) break;
        await sleep(delay, this.stop.signal);
        delay = Math.min(RETRY_MAX_MS, delay * 2);
      }
    })();
  }

  /** Follows both logs to the run's end, resuming by byte offset after every failure; then how it ended. */
  private async copyToEnd(): Promise<ExitInfo> {
    let delay = RETRY_MIN_MS;
    for (;;) {
      if (this.stop.signal.aborted) return new Promise<ExitInfo>(() => {});
      // Both streams stop together when one fails: a stream must never be copied by two follows at once.
      const round = new AbortController();
      const onStop = (): void => round.abort();
      this.stop.signal.addEventListener('abort', onStop);
      const follow = (stream: LogStream): Promise<CloudRunDetail | undefined> =>
        this.follow(stream, round.signal).catch((error: unknown) => {
          round.abort();
          throw error;
        });
      const [out, err] = await Promise.allSettled([follow('stdout'), follow('stderr')]);
      this.stop.signal.removeEventListener('abort', onStop);
      if (out.status === 'fulfilled' && err.status === 'fulfilled' && out.value && err.value) {
        this.clearProblem();
        this.seen(err.value);
        this.result = exitOf(err.value);
        return this.result;
      }
      if (this.stop.signal.aborted) continue;
      const failure = out.status === 'rejected' ? out.reason : err.status === 'rejected' ? err.reason : undefined;
      if (failure instanceof QwexError && failure.code === ErrorCode.RunNotFound) {
        this.result = lostRun(this.id);
        return this.result;
      }
      if (failure !== undefined) this.noteProblem(failure);
      await sleep(delay, this.stop.signal);
      delay = Math.min(RETRY_MAX_MS, delay * 2);
    }
  }

  /** Appends one log's new bytes, from where the local file ends, until the run's end (its final record). */
  private async follow(stream: LogStream, signal: AbortSignal): Promise<CloudRunDetail | undefined> {
    const fd = openSync(this.logPath(stream), 'a', 0o600);
    try {
      const result = await this.options.client.followLogs(this.id, {
        stream,
        offset: fstatSync(fd).size,
        signal,
        onData: (chunk) => {
          writeAll(fd, chunk);
          this.clearProblem();
        },
      });
      return result.run;
    } finally {
      closeSync(fd);
    }
  }

  /** Copies what the server has of a log beyond the local file's end (the run has ended: it grows no more). */
  private async drain(stream: LogStream): Promise<void> {
    const path = this.logPath(stream);
    const have = statSync(path, { throwIfNoEntry: false })?.size ?? 0;
    const rest = await this.options.client.logs(this.id, stream, have);
    if (rest.length === 0) return;
    const fd = openSync(path, 'a', 0o600);
    try {
      // Appended only if the file is still where it was measured: never a byte twice.
      if (fstatSync(fd).size === have) writeAll(fd, rest);
    } finally {
      closeSync(fd);
    }
  }

  private async cancel(graceMs: number): Promise<void> {
    let delay = RETRY_MIN_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.options.client.cancel(this.id, graceMs);
        return;
      } catch (error) {
        const unanswered = error instanceof QwexError && error.details?.unreachable === true;
        if (!unanswered || attempt >= CANCEL_ATTEMPTS || this.stop.signal.aborted) return; // ended already, or the server said no
        await sleep(delay, this.stop.signal);
        delay = Math.min(RETRY_MAX_MS, delay * 2);
      }
    }
  }

  private logPath(stream: LogStream): string {
    return join(this.options.dir, stream === 'stdout' ? RunFiles.stdout : RunFiles.stderr);
  }
}

/**
 * How a run the server reports as ended ended, in the terms of the local
 * record. Its times stay this machine's (when it saw the run start and
 * end), so that the local record's duration never mixes two clocks.
 */
export function exitOf(run: CloudRunDetail): ExitInfo {
  const error = run.record?.error;
  switch (run.status) {
    case 'succeeded':
      return { exitCode: run.exitCode ?? 0, signal: null };
    case 'lost':
      return { exitCode: null, signal: null, lost: `the server lost it${error ? `: ${error.message}` : ''}` };
    case 'cancelled':
      if (run.exitCode === null && run.signal === null) {
        return { exitCode: null, signal: null, error: { code: ErrorCode.NotStarted, message: 'cancelled on the server before it started' } };
      }
      return { exitCode: run.exitCode, signal: run.signal };
    default: {
      if (run.endReason === 'timeout') {
        return { exitCode: run.exitCode, signal: run.signal, error: { code: ErrorCode.Timeout, message: error?.message ?? `stopped on the server after its ${run.record?.job.timeoutMs} ms timeout` } };
      }
      if (error) return { exitCode: run.exitCode, signal: run.signal, error };
      return { exitCode: run.exitCode, signal: run.signal };
    }
  }
}

function lostRun(id: string): ExitInfo {
  return { exitCode: null, signal: null, lost: `the server has no run ${id} for this token` };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}
