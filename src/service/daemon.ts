import { randomUUID } from 'node:crypto';
import { DaemonClient } from '../daemon-client.js';
import { Method, type ListedRun, type RunView } from '../protocol.js';
import type { Run } from '../run/model.js';
import type { ListQuery } from '../store/run-index.js';
import type { RunStore } from '../store/run-store.js';
import { submitterEnv } from '../config/job.js';
import type { Watcher } from '../watcher.js';
import { ErrorCode, QwexError } from '../errors.js';
import type { DirectRunService } from './direct.js';
import type { FollowOptions, RunRef, RunService, SubmitRequest } from './run-service.js';

/** How often a waiter asks qwexd about a run (in between it reads the record qwexd writes). */
const ASK_DAEMON_MS = 10_000;

/** How many times a submission is sent before its error is reported (qwexd restarting meanwhile). */
const SUBMIT_ATTEMPTS = 8;

/**
 * Runs through qwexd, which queues, starts and supervises them and is then
 * their only writer. Output is still read straight from the run's log files
 * (every backend writes them locally, and raw reads are many times faster
 * than the JSON-RPC stream, which is there for other programs); the end of
 * a run comes from qwexd.
 */
export class DaemonRunService implements RunService {
  readonly via = 'qwexd' as const;
  private watcher: Promise<Watcher> | undefined;
  private fallback: DirectRunService | undefined;
  private daemonGone = false;
  private closeWatch: { dispose(): void } | undefined;

  constructor(
    private client: DaemonClient,
    private readonly store: RunStore,
  ) {}

  /**
   * Sends the jobs with an id of this submission, so that when qwexd goes
   * away mid-request (killed, restarted) the request can be sent again to
   * the next qwexd, which gets the same runs rather than new ones.
   */
  async submit(request: SubmitRequest): Promise<Run[]> {
    const params = {
      project: request.project,
      jobs: request.jobs,
      env: request.env ?? submitterEnv(),
      provenance: request.jobs.map((_, i) => request.provenance?.[i] ?? null),
      submissionId: randomUUID(),
    };
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.client.request(Method.submit, params)).runs;
      } catch (error) {
        if (!(error instanceof QwexError) || error.code !== ErrorCode.DaemonUnavailable || attempt >= SUBMIT_ATTEMPTS) throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
      // A no-op when one runs again (a service manager restarted it).
      await import('../daemon-process.js').then(({ startDaemon }) => startDaemon()).catch(() => undefined);
      const fresh = await DaemonClient.connectIfRunning().catch(() => undefined);
      if (fresh) {
        this.client.close();
        this.client = fresh;
      }
    }
  }

  async cancel(run: RunRef, options: { graceMs?: number } = {}): Promise<Run> {
    return (await this.client.request(Method.cancel, { id: run.id, ...(options.graceMs === undefined ? {} : { graceMs: options.graceMs }) })).run;
  }

  get(run: RunRef): Promise<RunView> {
    return this.client.request(Method.get, { id: run.id });
  }

  async list(query: ListQuery): Promise<ListedRun[]> {
    const { statuses, ...rest } = query;
    return (await this.client.request(Method.list, { ...rest, ...(statuses ? { statuses: [...statuses] } : {}) })).runs;
  }

  async wait(run: RunRef, options: { signal?: AbortSignal } = {}): Promise<Run> {
    return (await this.watch()).waitForEnd(run.dir, { refresh: this.watchRefresh(run), ...(options.signal ? { signal: options.signal } : {}) });
  }

  async follow(run: RunRef, options: FollowOptions): Promise<Run> {
    return (await this.watch()).follow(run.dir, { ...options, refresh: this.watchRefresh(run) });
  }

  /** The watcher of waiters and followers, loaded on first use: a submission (`qwex run -d`) needs none. */
  private watch(): Promise<Watcher> {
    this.watcher ??= import('../watcher.js').then(({ Watcher }) => new Watcher(this.store));
    return this.watcher;
  }

  /**
   * What a waiter looks at on each change of the run's directory and each
   * second: the record itself, which qwexd writes (it is final once it says
   * so), and qwexd's view of it only every ASK_DAEMON_MS. qwexd watches the
   * runs it does not supervise itself and takes over those whose supervisor
   * died, so the question is whether qwexd is still there: a `qwex wait` of
   * a thousand queued runs costs qwexd a few requests a second, not a
   * thousand and more.
   */
  private watchRefresh(run: RunRef): () => Promise<Run> {
    // The first look too is at the record: asking at once would cost qwexd a request per run waited for.
    let askedAt = Date.now();
    // qwexd gone (its connection closed): ask at once, which moves on to reading the runs as direct mode does.
    this.closeWatch ??= this.client.onClose(() => (this.daemonGone = true));
    return async () => {
      if (!this.fallback && (this.daemonGone || Date.now() - askedAt >= ASK_DAEMON_MS)) {
        askedAt = Date.now();
        return this.refresh(run);
      }
      if (this.fallback) return this.refresh(run);
      return this.store.read(run.dir);
    };
  }

  async close(): Promise<void> {
    this.closeWatch?.dispose();
    this.client.close();
  }

  /**
   * The record from qwexd; once qwexd is gone (stopped, or killed while we
   * follow), from the record itself as direct mode reads it, so a follower
   * carries on to the run's end.
   */
  private async refresh(run: RunRef): Promise<Run> {
    if (!this.fallback) {
      try {
        return (await this.client.request(Method.get, { id: run.id })).run;
      } catch (error) {
        if (!(error instanceof QwexError) || error.code !== ErrorCode.DaemonUnavailable) throw error;
        const { DirectRunService } = await import('./direct.js');
        this.fallback ??= new DirectRunService(this.store);
      }
    }
    return (await this.fallback.get(run)).run;
  }
}
