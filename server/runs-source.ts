import type { Readable } from 'node:stream';
import { findBackend } from '../src/backends/registry.js';
import type { ArtifactEntry, ArtifactList, CloudRun, CloudRunDetail, RunPage, RunQuery, WorkflowView } from '../src/cloud/api.js';
import { isTerminal, type Run } from '../src/run/model.js';
import type { ChangeFeed } from './change-feed.js';
import type { LogWatchers } from './log-tail.js';
import type { SseStreams } from './sse.js';
import type { Principal } from './tokens.js';

/**
 * Where the run API's data comes from: SQL on qwexcloud (runs-source-sql.ts),
 * the local run service and index under `qwex ui` (runs-source-local.ts).
 * The route handlers (routes/runs, logs, artifacts, events, usage,
 * workflows) see only this, so both servers answer the same API with the
 * same code. Every method that names a run takes the principal asking and
 * throws QWEX_RUN_NOT_FOUND for a run it may not see, exactly as for one
 * that does not exist.
 */
export interface RunsSource {
  list(principal: Principal, query: RunQuery): Promise<RunPage>;
  detail(principal: Principal, id: string): Promise<CloudRunDetail>;
  /** Asks the run to stop; resolves with it as it is then. QWEX_RUN_NOT_ACTIVE once it ended. */
  cancel(principal: Principal, id: string, graceMs?: number): Promise<CloudRunDetail>;
  /** The same job again (same code, same settings) as a new run of the principal's. */
  rerun(principal: Principal, id: string): Promise<CloudRunDetail>;
  /** The run's directory on this machine (its logs, its usage series) and the run as it is now. */
  locate(principal: Principal, id: string): Promise<{ dir: string; run: CloudRun }>;
  artifacts(principal: Principal, id: string): Promise<ArtifactList>;
  /** One artifact's content; the caller checked that `path` is a plain relative path. The stream is the caller's to consume or destroy. */
  openArtifact(principal: Principal, id: string, path: string): Promise<{ entry: ArtifactEntry; content: Readable }>;
  /** A workflow and its stages; QWEX_NOT_FOUND where workflows are not available (yet). */
  workflow(principal: Principal, id: string): Promise<WorkflowView>;
  /** Called with a run (as listed) whenever it changed, for every run. Returns the unsubscribe. */
  onChange(listener: (run: CloudRun) => void): () => void;
  /** As onChange, for one run only (a log follower waiting for the run's end). */
  onRunChange(id: string, listener: (run: CloudRun) => void): () => void;
}

/** What the shared route plugins are given (as plugin options; nothing is decorated onto the server). */
export interface ApiServices {
  source: RunsSource;
  streams: SseStreams;
  watchers: LogWatchers;
  feed: ChangeFeed;
}

/**
 * What the API adds to a run as listed, from its record: what it waits for
 * before its command executes (the backend's own words, through its
 * descriptor: the page needs no backend knowledge), and the job and
 * workflow it belongs to.
 */
export function runExtras(run: Run): Pick<CloudRun, 'waiting' | 'job' | 'workflow'> {
  // The backend says when a run waits: a Kueue workload waits for quota while the run is already `running` in qwex's terms.
  const waiting = isTerminal(run.status) ? undefined : findBackend(run.job.backend)?.waiting?.(run);
  // Links that jobs and workflows (issue 16) add to the job in the record; read defensively, as data, until they are merged.
  const linked = run.job as Run['job'] & { recipe?: { name?: unknown }; workflow?: { id?: unknown; stage?: unknown } };
  const job = typeof linked.recipe?.name === 'string' ? linked.recipe.name : undefined;
  const workflow = typeof linked.workflow?.id === 'string' ? { id: linked.workflow.id, stage: String(linked.workflow.stage ?? '') } : undefined;
  return { ...(waiting ? { waiting } : {}), ...(job === undefined ? {} : { job }), ...(workflow ? { workflow } : {}) };
}
