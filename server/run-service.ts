import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { ArtifactEntry, ArtifactList, CloudRunDetail, LogStream, RunQuery, SubmitRequest } from '../src/cloud/api.js';
import type { ArtifactManifest } from '../src/workspace/artifacts.js';
import { ErrorCode, QwexError, redactSecrets } from '../src/errors.js';
import { RunFiles } from '../src/paths.js';
import { readRunRecord } from '../src/store/run-record.js';
import { displayCommand, isTerminal, type Job, type Run, type RunStatus } from '../src/run/model.js';
import type { BlobStore } from './blob-store.js';
import type { Target } from './config.js';
import type { Db } from './db/connect.js';
import type { NewRunRow, RunRow } from './db/schema.js';
import type { Dispatcher, RunChange, RunOwner } from './dispatch.js';
import { RunTable, toCloudRunDetail } from './run-table.js';
import { SubmissionTable, fingerprintOf } from './submissions.js';
import { firstFit } from './placement.js';
import { jobFor, placeOf } from './targets.js';
import type { Principal } from './tokens.js';
import { acceptWorkspace, isInsidePath } from './workspace-upload.js';

/** How the server chooses a new run's target, and what it adds to its job (the run's notification targets). */
export interface SubmitPolicy {
  place(principal: Principal, request: SubmitRequest): Promise<Target>;
  prepare?(principal: Principal, request: SubmitRequest, job: Job): void;
}

export type Log = (level: 'info' | 'warn' | 'error', event: string, fields?: Record<string, unknown>) => void;

/** Attempts to write a change into SQL before giving up on it (about 15 s in all). */
const MIRROR_RETRIES = 5;

/** What a run's command starts from on the server: never the server's own environment (its database URL, its credentials). */
const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

interface Mirror {
  /** The newest change not yet written. */
  next: RunChange | undefined;
  owner: RunOwner;
  /** Settles once everything seen so far is in SQL. */
  writing: Promise<void>;
}

/**
 * Runs as the API sees them: submit, cancel, rerun, list, show, and their
 * artifacts, for a principal. Every change the dispatcher reports is
 * mirrored into SQL, in order per run (the newest state wins; none is
 * written twice concurrently), and then announced to change listeners (the
 * /v1/events feed, log followers waiting for the end). When a run has ended,
 * its artifacts are copied into the content store before its final row is
 * written, so the `end` a follower sees comes with artifacts to download.
 */
export class RunService {
  readonly table: RunTable;
  private readonly submissions: SubmissionTable;
  /** Keyed submits being accepted now, by user and key: a repeat waits for the first instead of racing it. */
  private readonly accepting = new Map<string, { fingerprint: string; done: Promise<CloudRunDetail> }>();
  private readonly mirrors = new Map<string, Mirror>();
  private readonly listeners = new Set<(row: RunRow) => void>();
  private readonly runListeners = new Map<string, Set<(row: RunRow) => void>>();
  private unsubscribe: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly options: { database: Db; dispatcher: Dispatcher; blobs: BlobStore; targets: readonly Target[]; log: Log; policy?: SubmitPolicy },
  ) {
    this.table = new RunTable(options.database);
    this.submissions = new SubmissionTable(options.database);
  }

  get targets(): readonly Target[] {
    return this.options.targets;
  }

  /** Starts mirroring, re-adopts runs left active by an earlier server, and completes in SQL what a crash left unwritten. */
  async start(): Promise<void> {
    this.unsubscribe = this.options.dispatcher.onChange((change) => this.observe(change));
    await this.options.dispatcher.recover();
    for (const row of await this.table.unsettled()) {
      try {
        this.observe({ run: readRunRecord(row.run_dir), dir: row.run_dir });
      } catch (error) {
        this.options.log('warn', 'resync-skipped', { runId: row.id, message: (error as Error).message });
      }
    }
    await Promise.all([...this.mirrors.values()].map((m) => m.writing));
  }

  /**
   * A submit with an idempotency key: the first with this key (for this
   * user) creates the run; a repeat of the same request, now or after a
   * restart, gets that run back (`replayed`) and creates nothing. The same
   * key with another request is QWEX_USAGE; a key whose first submit a
   * crash interrupted before its run was recorded is QWEX_RUN_LOST (whether
   * it started cannot be known, so it is not started again).
   */
  async submitOnce(principal: Principal, request: SubmitRequest, key: string): Promise<{ run: CloudRunDetail; replayed: boolean }> {
    const fingerprint = fingerprintOf(request);
    const slot = `${principal.user}\n${key}`;
    const current = this.accepting.get(slot);
    if (current) {
      if (current.fingerprint !== fingerprint) throw keyReused(key);
      return { run: await current.done, replayed: true };
    }
    let replayed = false;
    const done = (async (): Promise<CloudRunDetail> => {
      const earlier = await this.earlierSubmission(principal, key, fingerprint);
      if (earlier) {
        replayed = true;
        return earlier;
      }
      let created = false;
      try {
        return await this.submit(principal, request, async (runId) => {
          created = true;
          await this.submissions.complete(principal.user, key, runId);
        });
      } catch (error) {
        // Nothing was created (a bad request, a missing blob): the key may be used again once it is fixed.
        if (!created) await this.submissions.release(principal.user, key).catch(() => {});
        throw error;
      }
    })();
    this.accepting.set(slot, { fingerprint, done });
    try {
      return { run: await done, replayed };
    } finally {
      this.accepting.delete(slot);
    }
  }

  /** The run a keyed submit created (waiting for one being accepted now); QWEX_NOT_FOUND for a key never used. */
  async submission(principal: Principal, key: string): Promise<CloudRunDetail> {
    const current = this.accepting.get(`${principal.user}\n${key}`);
    if (current) return current.done;
    const found = await this.submissions.find(principal.user, key);
    if (!found) throw new QwexError(ErrorCode.NotFound, `no submit with the key ${key}`, { hint: 'POST /v1/runs with this Idempotency-Key submits it' });
    if (found.runId === null) throw interrupted(key);
    return this.detail(principal, found.runId);
  }

  /** The run of an earlier submit with this key, or undefined once the key is reserved for this one. */
  private async earlierSubmission(principal: Principal, key: string, fingerprint: string): Promise<CloudRunDetail | undefined> {
    for (;;) {
      const found = await this.submissions.find(principal.user, key);
      if (found) {
        if (found.fingerprint !== fingerprint) throw keyReused(key);
        if (found.runId === null) throw interrupted(key);
        return this.detail(principal, found.runId);
      }
      if (await this.submissions.reserve(principal.user, key, fingerprint)) return undefined;
      // Taken between the look and the reservation (by another process on this database): look again.
    }
  }

  /** `onCreated` is awaited as soon as the run is recorded (before it is mirrored into SQL). */
  async submit(principal: Principal, request: SubmitRequest, onCreated?: (runId: string) => Promise<void>): Promise<CloudRunDetail> {
    const target = this.options.policy ? await this.options.policy.place(principal, request) : firstFit(this.options.targets, request);
    const owner = { user: principal.user, target: target.name };
    const project = this.options.dispatcher.projectOf(owner);
    const cwd = request.job.cwd ?? '';
    if (cwd !== '' && !isInsidePath(cwd)) {
      throw new QwexError(ErrorCode.Usage, `job.cwd: "${cwd}" is not a relative path inside the workspace`, { hint: 'name a directory of the workspace, with no ".." parts' });
    }
    const job = jobFor(target, request.job, request.queue, project);
    this.options.policy?.prepare?.(principal, request, job);
    const manifest = await acceptWorkspace(request.workspace ?? { files: [], symlinks: [] }, project, this.options.blobs);
    this.options.blobs.content.writeManifest(manifest);
    job.workspace = { mode: 'snapshot', manifest: manifest.id, cwd };
    return this.dispatch(principal, owner, job, manifest.id, onCreated);
  }

  /** Runs the same job again (same code, same settings) on the same target, as a new run of the principal's. */
  async rerun(principal: Principal, id: string): Promise<CloudRunDetail> {
    const row = await this.row(principal, id);
    if (!this.options.targets.some((t) => t.name === row.target)) {
      throw new QwexError(ErrorCode.Usage, `run ${id}'s target "${row.target}" is no longer configured on this server`, { hint: 'submit it again to another target' });
    }
    const old = JSON.parse(row.record) as Run;
    const owner = { user: principal.user, target: row.target };
    const job: Job = { ...old.job, cwd: this.options.dispatcher.projectOf(owner) };
    if (job.workspace) this.options.blobs.content.readManifest(job.workspace.manifest); // still there, or a clear error
    return this.dispatch(principal, owner, job, job.workspace?.manifest);
  }

  async cancel(principal: Principal, id: string, graceMs?: number): Promise<CloudRunDetail> {
    const row = await this.row(principal, id);
    if (isTerminal(row.status as RunStatus)) throw new QwexError(ErrorCode.RunNotActive, `run ${id} already ended (${row.status})`);
    const record = JSON.parse(row.record) as Run;
    await this.options.dispatcher.cancel(row.run_dir, graceMs ?? record.job.killGraceMs);
    await this.settled(id);
    return this.detail(principal, id);
  }

  async detail(principal: Principal, id: string): Promise<CloudRunDetail> {
    const row = await this.row(principal, id);
    const waitReason = row.status === 'pending' ? this.options.dispatcher.waitReason(row.run_dir) : undefined;
    return { ...toCloudRunDetail(row), ...(waitReason === undefined ? {} : { waitReason }) };
  }

  list(principal: Principal, query: RunQuery): Promise<{ rows: RunRow[]; nextCursor: string | null }> {
    return this.table.list(principal, query);
  }

  /** The run's row, or QWEX_RUN_NOT_FOUND: for another user's run as for one that does not exist. */
  async row(principal: Principal, id: string): Promise<RunRow> {
    const row = await this.table.get(principal, id);
    if (!row) throw new QwexError(ErrorCode.RunNotFound, `no run ${id}`, { hint: 'GET /v1/runs lists your runs' });
    return row;
  }

  async artifacts(principal: Principal, id: string): Promise<ArtifactList> {
    const row = await this.row(principal, id);
    const artifacts = await this.table.artifacts(row.id);
    let skipped: ArtifactList['skipped'] = [];
    let error: string | null = null;
    if (row.artifacts_manifest !== null) {
      try {
        const manifest = JSON.parse(readFileSync(this.options.blobs.content.objectPath(row.artifacts_manifest), 'utf8')) as ArtifactManifest;
        skipped = manifest.skipped ?? [];
        error = manifest.error ?? null;
      } catch {
        error = 'the artifact manifest cannot be read from the content store';
      }
    }
    return { artifacts, skipped, error };
  }

  async artifact(principal: Principal, id: string, path: string): Promise<ArtifactEntry> {
    const row = await this.row(principal, id);
    const entry = await this.table.artifact(row.id, path);
    if (!entry) throw new QwexError(ErrorCode.NotFound, `run ${id} has no artifact "${path}"`, { hint: `GET /v1/runs/${id}/artifacts lists them` });
    return entry;
  }

  logPath(row: RunRow, stream: LogStream): string {
    return join(row.run_dir, stream === 'stdout' ? RunFiles.stdout : RunFiles.stderr);
  }

  /** Called with each run's row once a change of it is in SQL (never for a change still being written). Returns the unsubscribe. */
  onChange(listener: (row: RunRow) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** As onChange, for one run only (what a log follower waits on: it costs nothing when other runs change). */
  onRunChange(id: string, listener: (row: RunRow) => void): () => void {
    let set = this.runListeners.get(id);
    if (!set) this.runListeners.set(id, (set = new Set()));
    set.add(listener);
    const listeners = set;
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0 && this.runListeners.get(id) === listeners) this.runListeners.delete(id);
    };
  }

  /** Settles once every change of the run seen so far is in SQL. */
  settled(id: string): Promise<void> {
    return this.mirrors.get(id)?.writing ?? Promise.resolve();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe?.();
    await Promise.all([...this.mirrors.values()].map((m) => m.writing));
    await this.options.dispatcher.close();
    this.listeners.clear();
    this.runListeners.clear();
  }

  private async dispatch(principal: Principal, owner: RunOwner, job: Job, manifest: string | undefined, onCreated?: (runId: string) => Promise<void>): Promise<CloudRunDetail> {
    const { run } = await this.options.dispatcher.submit(owner, {
      job,
      ...(manifest === undefined ? {} : { provenance: { manifest } }),
      baseEnv: Object.fromEntries(PASSED_ENV.flatMap((name) => (process.env[name] === undefined ? [] : [[name, process.env[name]!]]))),
    });
    await onCreated?.(run.id);
    await this.settled(run.id);
    return this.detail(principal, run.id);
  }

  private observe(change: RunChange): void {
    if (this.closed) return;
    const owner = this.options.dispatcher.ownerOf(change.dir);
    if (!owner) {
      this.options.log('warn', 'foreign-run', { runId: change.run.id, dir: change.dir });
      return;
    }
    const id = change.run.id;
    const mirror = this.mirrors.get(id);
    if (mirror) {
      mirror.next = change;
      return;
    }
    const fresh: Mirror = { next: change, owner, writing: Promise.resolve() };
    this.mirrors.set(id, fresh);
    fresh.writing = this.drain(id, fresh);
  }

  private async drain(id: string, mirror: Mirror): Promise<void> {
    // Let the caller that caused the change (a submit) finish its synchronous part first.
    await Promise.resolve();
    let failures = 0;
    while (mirror.next) {
      const change = mirror.next;
      mirror.next = undefined;
      try {
        const row = await this.write(change, mirror.owner);
        failures = 0;
        for (const listener of this.listeners) listener(row);
        for (const listener of [...(this.runListeners.get(id) ?? [])]) listener(row);
      } catch (error) {
        failures++;
        const giveUp = this.closed || failures > MIRROR_RETRIES;
        this.options.log(giveUp ? 'error' : 'warn', 'mirror-failed', { runId: id, status: change.run.status, attempt: failures, message: (error as Error).message });
        if (giveUp) continue; // run.json keeps the truth; the next change, or the next start's resync, writes it
        // The database may be restarting: try again with what is newest by then.
        mirror.next ??= change;
        await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** failures));
      }
    }
    this.mirrors.delete(id);
  }

  private async write({ run, dir }: RunChange, owner: RunOwner): Promise<RunRow> {
    const now = new Date().toISOString();
    const row: NewRunRow = {
      id: run.id,
      user_name: owner.user,
      target: owner.target,
      backend: run.job.backend,
      ...placeOf(run, owner.target),
      name: run.job.name ?? null,
      command: redactSecrets(displayCommand(run.job)),
      status: run.status,
      exit_code: run.exitCode,
      signal: run.signal,
      end_reason: run.endReason ?? null,
      created_at: run.createdAt,
      started_at: run.startedAt ?? null,
      finished_at: run.finishedAt ?? null,
      updated_at: now,
      run_dir: dir,
      record: JSON.stringify(run),
      artifacts_collected: 0,
      artifacts_manifest: null,
    };
    if (!isTerminal(run.status)) {
      await this.table.upsert(row);
      return { ...row, artifacts_collected: 0, artifacts_manifest: null } as RunRow;
    }
    let collected: { files: ArtifactEntry[]; manifest: string | null } | undefined;
    try {
      collected = await this.collect(dir);
    } catch (error) {
      this.options.log('error', 'artifacts-not-collected', { runId: run.id, message: (error as Error).message });
    }
    const final: NewRunRow = { ...row, artifacts_collected: collected ? 1 : 0, artifacts_manifest: collected?.manifest ?? null };
    await this.table.upsert(final, collected);
    // The store holds them now; the run directory's copies would only double the disk they take.
    if (collected) rmSync(join(dir, RunFiles.files), { recursive: true, force: true });
    return final as RunRow;
  }

  /** Copies the run's captured files and artifacts.json into the content store. */
  private async collect(dir: string): Promise<{ files: ArtifactEntry[]; manifest: string | null }> {
    const manifestPath = join(dir, RunFiles.artifacts);
    if (!existsSync(manifestPath)) return { files: [], manifest: null };
    const text = readFileSync(manifestPath);
    const manifest = JSON.parse(text.toString('utf8')) as ArtifactManifest;
    const files: ArtifactEntry[] = [];
    for (const file of manifest.files ?? []) {
      if (!isInsidePath(file.path)) continue;
      const source = join(dir, RunFiles.files, ...file.path.split('/'));
      if (!existsSync(source)) continue; // removed to make room for the record (disk full): the manifest still says it was there
      const size = await this.options.blobs.adopt(source, file.sha256);
      files.push({ path: file.path, size, sha256: file.sha256 });
    }
    const manifestSha = createHash('sha256').update(text).digest('hex');
    await this.options.blobs.adopt(manifestPath, manifestSha);
    return { files, manifest: manifestSha };
  }
}

function keyReused(key: string): QwexError {
  return new QwexError(ErrorCode.Usage, `the Idempotency-Key ${key} was used before for another request`, { hint: 'a new run needs a new key' });
}

function interrupted(key: string): QwexError {
  return new QwexError(ErrorCode.RunLost, `the submit with the key ${key} was interrupted (the server stopped) before its run was recorded: whether it started cannot be known`, {
    hint: 'list your runs (qwex ps --cloud, GET /v1/runs) and submit again with a new key if it is not there',
  });
}
