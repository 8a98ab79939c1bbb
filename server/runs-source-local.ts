import { createReadStream, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { findBackend } from '../src/backends/registry.js';
import type { ArtifactEntry, ArtifactList, CloudRun, CloudRunDetail, RunPage, RunQuery, Waiting, WorkflowView } from '../src/cloud/api.js';
import { ErrorCode, QwexError, errnoCode, redactSecrets } from '../src/errors.js';
import { RunFiles } from '../src/paths.js';
import type { ListedRun } from '../src/protocol.js';
import { displayCommand, type Run, type RunStatus } from '../src/run/model.js';
import type { RunService } from '../src/service/index.js';
import type { RunSummary } from '../src/store/run-index.js';
import { readRunRecord } from '../src/store/run-record.js';
import type { RunStore } from '../src/store/run-store.js';
import type { ArtifactManifest } from '../src/workspace/artifacts.js';
import { DEFAULT_PAGE, MAX_PAGE, publicRecord } from './run-table.js';
import { runExtras, type RunsSource } from './runs-source.js';
import { workflowNotFound, type WorkflowLookup } from './runs-source-sql.js';
import type { Principal } from './tokens.js';
import { isInsidePath } from './workspace-upload.js';

/** Between two looks for changed runs (what the change feed and log followers wait on). */
export const LOCAL_POLL_MS = 1000;
/** The newest runs compared at each look (plus every active one): a new run is always among them. */
const WATCHED_NEWEST = 200;
const ACTIVE: RunStatus[] = ['pending', 'running'];

export interface LocalSourceOptions {
  store: RunStore;
  /** A run service for one operation (through qwexd when it runs, direct otherwise); closed after it. */
  openService(): Promise<RunService>;
  /** The user whose runs these are (there is one: the index is per user). */
  user: string;
  workflows?: WorkflowLookup;
  /** Where a look that failed is reported (it is tried again at the next tick). */
  onError?(error: Error): void;
}

/**
 * This user's runs on this machine, for `qwex ui`: listed from the run index
 * (every project), brought up to date and acted on through the run service
 * (qwexd when it runs, else direct), as the CLI does. Changes are found by
 * looking every LOCAL_POLL_MS at the newest and the active runs: there is no
 * SQL mirror to announce them here, and a look is one small index query and
 * one listing of the active runs.
 */
export class LocalRunsSource implements RunsSource {
  private readonly listeners = new Set<(run: CloudRun) => void>();
  private readonly runListeners = new Map<string, Set<(run: CloudRun) => void>>();
  /** What each watched run looked like at the last look. */
  private readonly seen = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private looking: Promise<void> | undefined;
  private first = true;
  private closed = false;

  constructor(private readonly options: LocalSourceOptions) {}

  /** Takes the first look (what exists now is not a change) and starts looking for changes. */
  async start(): Promise<void> {
    await this.look();
    this.timer = setInterval(() => void this.look(), LOCAL_POLL_MS);
  }

  async list(_principal: Principal, q: RunQuery): Promise<RunPage> {
    const limit = Math.min(Math.max(q.limit ?? DEFAULT_PAGE, 1), MAX_PAGE);
    const text = q.q?.toLowerCase();
    const after = q.createdAfter === undefined ? undefined : Date.parse(q.createdAfter);
    const before = q.createdBefore === undefined ? undefined : Date.parse(q.createdBefore);
    // The index has no paging of its own: a listing of its rows (a few ms for thousands), filtered here as SQL would.
    const rows = this.options.store.runIndex().list(q.status && q.status.length > 0 ? { statuses: q.status } : {}).reverse().filter((row) =>
      (q.backend === undefined || row.backend === q.backend) &&
      (q.target === undefined || row.project === q.target) &&
      (q.idPrefix === undefined || row.id.startsWith(q.idPrefix.toLowerCase())) &&
      (q.cursor === undefined || row.id < q.cursor) &&
      (after === undefined || Date.parse(row.createdAt) >= after) &&
      (before === undefined || Date.parse(row.createdAt) < before) &&
      (text === undefined || text === '' || row.command.toLowerCase().includes(text) || (row.name ?? '').toLowerCase().includes(text)),
    );
    const page = rows.slice(0, limit);
    const fresh = page.some((row) => ACTIVE.includes(row.status)) ? await this.active() : new Map<string, ListedRun>();
    return { runs: page.map((row) => this.toRun(row, fresh.get(row.id))), nextCursor: rows.length > limit ? page[page.length - 1]!.id : null };
  }

  async detail(_principal: Principal, id: string): Promise<CloudRunDetail> {
    const ref = this.ref(id);
    const view = await this.withService((service) => service.get(ref));
    const waiting = queueWaiting(view);
    const run = fromRecord(view.run, ref.dir, this.options.user);
    return { ...run, ...(run.waiting || !waiting ? {} : { waiting }), record: publicRecord(view.run) };
  }

  async cancel(principal: Principal, id: string, graceMs?: number): Promise<CloudRunDetail> {
    const ref = this.ref(id);
    await this.withService((service) => service.cancel(ref, graceMs === undefined ? {} : { graceMs }));
    return this.detail(principal, id);
  }

  /** The same job (its command, settings, and workspace snapshot when it ran in one) as a new run, as `qwex run` would submit it. */
  async rerun(principal: Principal, id: string): Promise<CloudRunDetail> {
    const old = readRunRecord(this.ref(id).dir);
    const [run] = await this.withService((service) => service.submit({ project: old.project, jobs: [old.job], provenance: [old.provenance] }));
    return this.detail(principal, run!.id);
  }

  async locate(_principal: Principal, id: string): Promise<{ dir: string; run: CloudRun }> {
    const { dir } = this.ref(id);
    return { dir, run: fromRecord(readRunRecord(dir), dir, this.options.user) };
  }

  async artifacts(_principal: Principal, id: string): Promise<ArtifactList> {
    const manifest = readManifest(this.ref(id).dir);
    if (!manifest) return { artifacts: [], skipped: [], error: null };
    return {
      artifacts: (manifest.files ?? []).map((f) => ({ path: f.path, size: f.size, sha256: f.sha256 })),
      skipped: manifest.skipped ?? [],
      error: manifest.error ?? null,
    };
  }

  async openArtifact(_principal: Principal, id: string, path: string): Promise<{ entry: ArtifactEntry; content: Readable }> {
    const { dir } = this.ref(id);
    const entry = readManifest(dir)?.files.find((f) => f.path === path);
    if (!entry || !isInsidePath(entry.path)) throw new QwexError(ErrorCode.NotFound, `run ${id} has no artifact "${path}"`, { hint: `GET /v1/runs/${id}/artifacts lists them` });
    const file = join(dir, RunFiles.files, ...entry.path.split('/'));
    let size: number;
    try {
      size = statSync(file).size;
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') throw error;
      throw new QwexError(ErrorCode.NotFound, `artifact "${path}" of run ${id} is listed but its file is gone`, { hint: `it was removed from ${join(dir, RunFiles.files)}` });
    }
    return { entry: { path: entry.path, size, sha256: entry.sha256 }, content: createReadStream(file) };
  }

  async workflow(principal: Principal, id: string): Promise<WorkflowView> {
    const found = await this.options.workflows?.(principal, id);
    if (!found) throw workflowNotFound(id, this.options.workflows !== undefined);
    return found;
  }

  onChange(listener: (run: CloudRun) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onRunChange(id: string, listener: (run: CloudRun) => void): () => void {
    let set = this.runListeners.get(id);
    if (!set) this.runListeners.set(id, (set = new Set()));
    set.add(listener);
    const listeners = set;
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0 && this.runListeners.get(id) === listeners) this.runListeners.delete(id);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.looking;
    this.listeners.clear();
    this.runListeners.clear();
  }

  /** One look for changes; a look still under way when the next is due is not doubled. */
  private look(): Promise<void> {
    this.looking ??= this.compare()
      .catch((error: unknown) => this.options.onError?.(error as Error))
      .finally(() => {
        this.looking = undefined;
      });
    return this.looking;
  }

  private async compare(): Promise<void> {
    const index = this.options.store.runIndex();
    const rows = new Map(index.list({ limit: WATCHED_NEWEST }).map((row) => [row.id, row]));
    const active = await this.active();
    for (const [id, listed] of active) rows.set(id, listed);
    // A run that was active at the last look and is neither new nor active now has ended (or is gone): look at it once more.
    for (const [id, print] of this.seen) {
      if (rows.has(id) || !print.startsWith('active')) continue;
      const row = index.get(id);
      if (row) rows.set(id, row);
      else this.seen.delete(id);
    }
    for (const [id, row] of rows) {
      const print = fingerprint(row, active.get(id));
      if (this.seen.get(id) === print) continue;
      this.seen.set(id, print);
      if (this.first || this.closed) continue;
      const run = this.toRun(row, active.get(id));
      for (const listener of this.listeners) listener(run);
      for (const listener of [...(this.runListeners.get(id) ?? [])]) listener(run);
    }
    // Forget what left the window, except active runs (their end is still to be announced).
    if (this.seen.size > WATCHED_NEWEST * 4) for (const [id, print] of this.seen) if (!rows.has(id) && !print.startsWith('active')) this.seen.delete(id);
    this.first = false;
  }

  /** Active runs as the run service sees them now (brought up to date, with their place in qwexd's queue). */
  private async active(): Promise<Map<string, ListedRun>> {
    const listed = await this.withService((service) => service.list({ statuses: ACTIVE }));
    return new Map(listed.map((run) => [run.id, run]));
  }

  /** A listed run, from its record when it can be read (cluster, queue, end reason, job), else from its index row. */
  private toRun(row: RunSummary, fresh: ListedRun | undefined): CloudRun {
    let run: CloudRun;
    try {
      run = fromRecord(readRunRecord(row.runDir), row.runDir, this.options.user);
    } catch {
      run = fromSummary(row, this.options.user); // removed or unreadable: a listing shows what the index knows (doctor says why)
    }
    if (!fresh) return run;
    const waiting = fresh.waiting ?? (fresh.status === 'pending' ? queueWaiting(fresh) : undefined);
    const { waiting: _recorded, ...settled } = run;
    return {
      ...settled,
      status: fresh.status,
      startedAt: fresh.startedAt,
      finishedAt: fresh.finishedAt,
      exitCode: fresh.exitCode,
      signal: fresh.signal,
      ...(waiting ? { waiting } : {}),
    };
  }

  private ref(id: string): { id: string; dir: string } {
    const row = this.options.store.runIndex().get(id);
    if (!row) throw new QwexError(ErrorCode.RunNotFound, `no run ${id}`, { hint: 'GET /v1/runs lists your runs' });
    return { id, dir: row.runDir };
  }

  private async withService<T>(use: (service: RunService) => Promise<T>): Promise<T> {
    const service = await this.options.openService();
    try {
      return await use(service);
    } finally {
      await service.close();
    }
  }
}

/** A run waiting in qwexd's own queue, said as a backend's waiting is. */
function queueWaiting(view: { queuePosition?: number; waitReason?: string }): Waiting | undefined {
  if (view.queuePosition === undefined && view.waitReason === undefined) return undefined;
  return {
    phase: 'queued',
    where: 'qwexd\'s queue',
    ...(view.queuePosition === undefined ? {} : { position: view.queuePosition }),
    ...(view.waitReason === undefined ? {} : { reason: view.waitReason }),
  };
}

function fingerprint(row: RunSummary, fresh: ListedRun | undefined): string {
  const r = fresh ?? row;
  const state = [r.status, r.startedAt, r.finishedAt, r.exitCode, r.signal, row.name, JSON.stringify(fresh?.waiting ?? null), fresh?.queuePosition ?? null, fresh?.waitReason ?? null];
  return `${fresh ? 'active' : 'settled'}:${JSON.stringify(state)}`;
}

function fromRecord(run: Run, dir: string, user: string): CloudRun {
  const place = findPlace(run);
  return {
    id: run.id,
    user,
    target: run.project,
    backend: run.job.backend,
    cluster: place.cluster ?? null,
    queue: place.queue ?? null,
    name: run.job.name ?? null,
    command: redactSecrets(displayCommand(run.job)),
    status: run.status,
    exitCode: run.exitCode,
    signal: run.signal,
    endReason: run.endReason ?? null,
    createdAt: run.createdAt,
    startedAt: run.startedAt ?? null,
    finishedAt: run.finishedAt ?? null,
    updatedAt: modifiedAt(join(dir, RunFiles.record)) ?? run.finishedAt ?? run.startedAt ?? run.createdAt,
    ...runExtras(run),
  };
}

function fromSummary(row: RunSummary, user: string): CloudRun {
  return {
    id: row.id,
    user,
    target: row.project,
    backend: row.backend,
    cluster: null,
    queue: null,
    name: row.name,
    command: row.command,
    status: row.status,
    exitCode: row.exitCode,
    signal: row.signal,
    endReason: null,
    createdAt: row.createdAt,
    startedAt: row.startedAt,
    finishedAt: row.finishedAt,
    updatedAt: row.finishedAt ?? row.startedAt ?? row.createdAt,
  };
}

function findPlace(run: Run): { cluster?: string; queue?: string } {
  return findBackend(run.job.backend)?.place?.(run) ?? {};
}

function modifiedAt(path: string): string | undefined {
  try {
    return statSync(path).mtime.toISOString();
  } catch {
    return undefined; // removed since it was read: the run's own times stand in
  }
}

function readManifest(dir: string): ArtifactManifest | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, RunFiles.artifacts), 'utf8')) as ArtifactManifest;
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw new QwexError(ErrorCode.RecordInvalid, `the artifact list of this run cannot be read: ${(error as Error).message}`);
  }
}
