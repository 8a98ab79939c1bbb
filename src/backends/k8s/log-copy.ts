import { join } from 'node:path';
import { RunFiles } from '../../paths.js';
import { abortableSleep } from '../follow-until-exit.js';
import { statusOf, type Cluster } from './cluster.js';
import { apiGet } from './http.js';
import { TimestampedLogCopy, readCursor, resumeSince } from './log-cursor.js';
import { MAIN_CONTAINER } from './manifest.js';

/** Before reading again a log stream that dropped. */
const RETRY_MS = 1000;
/** The cursor of the log copy, beside the logs in the run directory. */
const LOG_CURSOR = 'k8s-log-cursor.json';

/**
 * Copies each pod's `main` log into the run's stdout.log, through the API
 * (`follow`, `timestamps`), by timestamp cursor (log-cursor.ts): nothing
 * lost or doubled across dropped streams, restarted supervisors and pods
 * (an evicted pod's log is followed by the next one's). One copy per pod,
 * one writer of the file at a time. A copy that cannot open the run's log
 * file (its directory was removed) rejects: the follow cannot go on.
 */
export class PodLogs {
  private readonly copies = new Map<string, Promise<void>>();
  /** The open stream of each pod, to cut one that outlives its container (a silently dead connection). */
  private readonly streams = new Map<string, () => void>();
  private last: Promise<void> = Promise.resolve();
  private readonly stdoutPath: string;
  private readonly cursorPath: string;

  constructor(
    private readonly cluster: Cluster,
    runDir: string,
    /** What is known of the pod now: whether its main container has ended, and whether the pod is gone. */
    private readonly look: (pod: string) => { terminated: boolean; gone: boolean },
    private readonly signal: AbortSignal,
  ) {
    this.stdoutPath = join(runDir, RunFiles.stdout);
    this.cursorPath = join(runDir, LOG_CURSOR);
  }

  /** Copies the pod's log to its end (once: a second call returns the same copy). */
  follow(pod: string): Promise<void> {
    const running = this.copies.get(pod);
    if (running) return running;
    const previous = this.last;
    const task = previous.catch(() => {}).then(() => this.copy(pod));
    this.copies.set(pod, task);
    // A copy that failed (a full disk) is started again by the next call, from its cursor.
    task.catch(() => {
      if (this.copies.get(pod) === task) this.copies.delete(pod);
    });
    this.last = task;
    return task;
  }

  /** Cuts the pod's open stream: the copy reads again from its cursor. */
  cut(pod: string): void {
    this.streams.get(pod)?.();
  }

  close(): void {
    for (const abort of this.streams.values()) abort();
    this.streams.clear();
  }

  private async copy(pod: string): Promise<void> {
    while (!this.signal.aborted) {
      const { terminated: terminatedBefore, gone } = this.look(pod);
      const copy = new TimestampedLogCopy(this.stdoutPath, this.cursorPath, pod);
      let ended: 'end' | 'dropped' | 'gone';
      let failure: unknown;
      try {
        const { response, abort } = await apiGet(this.cluster, `/api/v1/namespaces/${this.cluster.namespace}/pods/${pod}/log`, {
          container: MAIN_CONTAINER,
          timestamps: 'true',
          follow: terminatedBefore ? undefined : 'true',
          sinceTime: resumeSince(readCursor(this.cursorPath), pod),
        });
        this.streams.set(pod, abort);
        if (this.signal.aborted) abort();
        ended = await new Promise<'end' | 'dropped'>((resolve) => {
          response.on('data', (chunk: Buffer) => {
            try {
              copy.push(chunk);
            } catch (error) {
              // The log or its cursor cannot be written (the run directory was removed): stop here, and say so below.
              failure ??= error;
              abort();
            }
          });
          response.on('end', () => resolve('end'));
          response.on('aborted', () => resolve('dropped'));
          response.on('error', () => resolve('dropped'));
          response.on('close', () => resolve('dropped')); // after 'end' this changes nothing
        });
        this.streams.delete(pod);
        // A last line without a newline is written only when the log is complete.
        if (ended === 'end' && terminatedBefore) copy.flush();
      } catch (error) {
        ended = statusOf(error) === 404 || gone ? 'gone' : 'dropped';
      } finally {
        try {
          copy.close();
        } catch (error) {
          failure ??= error;
        }
      }
      if (failure !== undefined) throw failure;
      if (ended === 'gone' || (ended === 'end' && terminatedBefore)) return;
      // The stream ended while the container ran (or it was dropped): look again, from the cursor.
      await abortableSleep(ended === 'dropped' ? RETRY_MS : 100, this.signal).catch(() => {});
    }
  }
}
