import { submitterEnv } from '../config/job.js';
import { ErrorCode, QwexError } from '../errors.js';
import { newRunId } from '../new-run-id.js';
import { runDir } from '../paths.js';
import { isTerminal, type Provenance, type Run } from '../run/model.js';
import type { Admission, Supervisor, SupervisorLog } from '../run/supervisor.js';
import { ContentStore } from '../workspace/snapshot.js';
import { findNextAttempt, nextAttemptJob, readNextAttempt, writeNextAttempt } from './attempts.js';
import { afterDecision, stageDecision, type DependencyDecision } from './dependencies.js';
import { INPUTS_DIR, InputsCache } from './inputs.js';
import { findRun, listWorkflowIds, newestStageRuns, readWorkflow, readWorkflowIfAny, resolveWorkflow, workflowDir, writeWorkflow } from './record.js';
import { willRetry } from './retry.js';
import { deriveState, workflowView } from './state.js';
import { Wakeups } from './wakeups.js';
import { isWorkflowDone, type StagePlan, type WorkflowRecord, type WorkflowView } from './types.js';

/** How often runs that queued runs wait for, and that this process does not supervise, are looked at again. */
const SWEEP_MS = 2000;
/** After a restart, workflows that ended this recently are told to the end listeners again (see onWorkflowEnd). */
const RETELL_ENDS_MS = 24 * 3_600_000;

interface Tracked {
  record: WorkflowRecord;
  dir: string;
  /** Stage runs are being created: until they are in `record.runs`, none of its stages may go on. */
  creating?: boolean;
}

export interface WorkflowSubmission {
  project: string;
  name: string | null;
  source: string;
  stages: StagePlan[];
  env: Record<string, string>;
  provenance?: Provenance;
}

/**
 * Workflows, dependencies and retries, for a Supervisor (qwexd's): one
 * admission rule holds a queued run until what it runs after has ended
 * (`--after`, a stage's `needs`, a retry's backoff) and gives a stage its
 * inputs as it starts; a listener on run ends creates retry attempts and
 * brings workflow records up to date. All of it is derived from run
 * records and workflow.json, so `recover()` after a kill -9 finishes every
 * workflow from what is on disk.
 */
export class WorkflowManager {
  private readonly tracked = new Map<string, Tracked>();
  /** The submitter's environment, for attempts and stage runs created later (never written to disk: it may hold secrets). */
  private readonly envs = new Map<string, Record<string, string>>();
  private readonly inputs: InputsCache;
  private readonly retrying = new Set<string>();
  private readonly wakeups: Wakeups;
  private readonly stopListening: () => void;
  private readonly endListeners = new Set<(workflow: WorkflowView) => void>();
  private closed = false;

  constructor(
    private readonly supervisor: Supervisor,
    private readonly log: SupervisorLog,
    content = new ContentStore(),
  ) {
    this.inputs = new InputsCache(content, (runId, error) => {
      if (error) this.log.warn('inputs-failed', { runId, message: error.message });
      this.supervisor.poke();
    });
    const rule: Admission = { admit: (dir, run) => this.admit(dir, run) };
    supervisor.addAdmission(rule);
    this.stopListening = supervisor.onRunEnd((dir, run) => this.runEnded(dir, run));
    this.wakeups = new Wakeups(() => supervisor.poke(), (dir) => supervisor.refresh(dir), SWEEP_MS);
  }

  /** Called when a workflow this process supervises ends (after its record says so), and by `recover()` again for the
   * ends of the last day (a kill may have come before the listeners): a listener does nothing the second time. */
  onWorkflowEnd(listener: (workflow: WorkflowView) => void): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  /** After the supervisor's own recovery: picks up every unfinished workflow and every failure whose retry was not created yet. */
  async recover(): Promise<void> {
    const index = this.supervisor.store.runIndex();
    const retellSince = Date.now() - RETELL_ENDS_MS;
    for (const project of index.projects()) {
      for (const id of listWorkflowIds(project)) {
        try {
          const record = readWorkflow(workflowDir(project, id));
          if (!isWorkflowDone(record.status)) await this.adopt(record);
          else if (record.finishedAt !== undefined && Date.parse(record.finishedAt) >= retellSince) this.tellEnd({ record, dir: workflowDir(project, id) });
        } catch (error) {
          this.log.warn('workflow-recover-skip', { id, message: (error as Error).message });
        }
      }
    }
    for (const row of index.retriable(['failed', 'lost'])) {
      try {
        const run = this.supervisor.store.read(row.runDir);
        if (willRetry(run) && readNextAttempt(row.runDir) === undefined && !this.workflowCancelled(run)) this.ensureNextAttempt(row.runDir, run, true);
      } catch (error) {
        this.log.warn('retry-recover-skip', { runId: row.id, message: (error as Error).message });
      }
    }
    this.supervisor.poke();
  }

  /** Remembers the submitter's environment of runs that may be retried (run.submit). */
  submitted(runs: readonly Run[], env: Record<string, string>): void {
    for (const run of runs) if (run.job.retry) this.envs.set(run.id, env);
  }

  /** The attempt created after this run failed, once there is one. */
  nextAttempt(dir: string): string | undefined {
    return readNextAttempt(dir);
  }

  submit(request: WorkflowSubmission): WorkflowView {
    const id = newRunId();
    const record: WorkflowRecord = {
      version: 1,
      id,
      name: request.name,
      project: request.project,
      source: request.source,
      createdAt: new Date().toISOString(),
      status: 'pending',
      exitCode: null,
      snapshot: request.provenance?.manifest ?? request.stages.find((s) => s.job.workspace)?.job.workspace?.manifest ?? null,
      ...(request.provenance ? { provenance: request.provenance } : {}),
      stages: request.stages,
      runs: {},
    };
    const wf: Tracked = { record, dir: workflowDir(request.project, id) };
    // The record first: a stage run always finds its workflow's.
    writeWorkflow(wf.dir, record);
    this.tracked.set(id, wf);
    this.envs.set(id, request.env);
    this.log.info('workflow-submitted', { id, stages: request.stages.length });
    this.createStageRuns(wf, request.stages, request.env);
    return this.view(wf);
  }

  get(ref: { id: string; project?: string }): Promise<WorkflowView> {
    return this.load(ref).then((wf) => this.view(wf));
  }

  list(query: { project?: string; limit?: number }): WorkflowView[] {
    const projects = query.project ? [query.project] : this.supervisor.store.runIndex().projects();
    const all: Tracked[] = [];
    for (const project of projects) {
      for (const id of listWorkflowIds(project)) {
        const dir = workflowDir(project, id);
        try {
          all.push(this.tracked.get(id) ?? { record: readWorkflow(dir), dir });
        } catch {
          // an unreadable record is left out of the listing; `workflow status` says why
        }
      }
    }
    all.sort((a, b) => (a.record.id < b.record.id ? -1 : 1));
    return (query.limit ? all.slice(-query.limit) : all).map((wf) => this.view(wf));
  }

  /** Cancels the workflow: stages not started never start; running ones are stopped. */
  async cancel(ref: { id: string; project?: string }): Promise<WorkflowView> {
    const wf = await this.load(ref);
    if (isWorkflowDone(deriveState(wf.record, this.currentRuns(wf)).status)) {
      throw new QwexError(ErrorCode.RunNotActive, `workflow ${wf.record.id} already ended (${wf.record.status})`);
    }
    wf.record = { ...wf.record, cancelRequested: true };
    writeWorkflow(wf.dir, wf.record);
    this.log.info('workflow-cancel', { id: wf.record.id });
    await this.cancelStages(wf);
    this.update(wf);
    return this.view(wf);
  }

  /** Resumes a failed or cancelled workflow: new runs for every stage that did not succeed; the others' runs are kept and reused. */
  async retry(ref: { id: string; project?: string }, env: Record<string, string>): Promise<WorkflowView> {
    const wf = await this.load(ref);
    const runs = this.currentRuns(wf);
    const state = deriveState(wf.record, runs);
    if (!isWorkflowDone(state.status)) {
      throw new QwexError(ErrorCode.Usage, `workflow ${wf.record.id} is still ${state.status}`, { hint: '`qwex workflow cancel` it first, or wait for it to end' });
    }
    const again = wf.record.stages.filter((s) => runs.get(s.name)?.status !== 'succeeded');
    if (again.length === 0) throw new QwexError(ErrorCode.Usage, `workflow ${wf.record.id} succeeded: there is nothing to retry`);
    const { finishedAt: _f, cancelRequested: _c, ...rest } = wf.record;
    wf.record = { ...rest, status: 'running', exitCode: null, resumed: (wf.record.resumed ?? 0) + 1 };
    writeWorkflow(wf.dir, wf.record);
    this.tracked.set(wf.record.id, wf);
    this.envs.set(wf.record.id, env);
    this.log.info('workflow-retry', { id: wf.record.id, stages: again.map((s) => s.name) });
    this.createStageRuns(wf, again, env);
    this.update(wf);
    return this.view(wf);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.wakeups.close();
    this.stopListening();
  }

  private admit(dir: string, run: Run): ReturnType<Admission['admit']> {
    try {
      const job = run.job;
      const notBefore = job.attempt?.notBefore === undefined ? undefined : Date.parse(job.attempt.notBefore);
      if (notBefore !== undefined && notBefore > Date.now()) {
        this.wakeups.at(notBefore);
        return { wait: `attempt ${job.attempt!.number} starts after its backoff, at ${new Date(notBefore).toISOString()}` };
      }
      const after = afterDecision(run, (id) => this.readRun(id, run.project, true));
      if (!('ready' in after)) return after;
      if (!job.workflow) return { start: true };
      const wf = this.trackedOf(job.workflow.id, run.project);
      if (!wf) return { cancel: `its workflow ${job.workflow.id} has no record` };
      if (wf.creating) return { wait: 'its workflow\'s stage runs are being created' };
      const stage: DependencyDecision = stageDecision(wf.record, run, (id) => this.readRun(id, run.project, false));
      if (!('ready' in stage)) return stage;
      const plan = wf.record.stages.find((s) => s.name === job.workflow!.stage)!;
      let manifest: string | undefined;
      const { snapshot } = wf.record;
      if (plan.needs.length > 0 && job.workspace && snapshot) {
        try {
          manifest = this.inputs.get(run.id, () => ({
            snapshot,
            cwd: job.workspace!.cwd,
            sources: plan.needs.map((need) => ({ stage: need, runDir: runDir(run.project, wf.record.runs[need]!) })),
          }));
        } catch (error) {
          return { cancel: `its inputs could not be gathered: ${(error as Error).message}` };
        }
        if (manifest === undefined) return { wait: `gathering its inputs from stage ${plan.needs.join(', ')}` };
      }
      this.markStarted(wf);
      if (plan.needs.length === 0) return { start: true };
      return {
        start: true,
        patch: (r) => ({
          ...r,
          job: { ...r.job, env: { ...r.job.env, QWEX_INPUTS: INPUTS_DIR }, ...(manifest && r.job.workspace ? { workspace: { ...r.job.workspace, manifest } } : {}) },
        }),
      };
    } catch (error) {
      // A rule that throws would stop the queue; the run waits, saying why, and is asked again at the next move.
      this.log.error('admission-failed', { dir, message: (error as Error).message });
      return { wait: `qwexd could not decide (${(error as Error).message})` };
    }
  }

  private runEnded(dir: string, run: Run): void {
    try {
      this.inputs.forget(run.id);
      if (willRetry(run) && !this.workflowCancelled(run)) this.ensureNextAttempt(dir, run, false);
      else if (!run.job.workflow) this.envs.delete(run.job.attempt?.of ?? run.id);
      const id = run.job.workflow?.id;
      const wf = id === undefined ? undefined : this.tracked.get(id);
      if (wf) this.update(wf);
    } catch (error) {
      this.log.error('run-end-handling-failed', { dir, message: (error as Error).message });
    }
    this.supervisor.poke();
  }

  /**
   * Creates the attempt after a failed run, unless there is one already (see attempts.ts). Only a run whose
   * end an earlier qwexd recorded (`search`, after a restart) can have an unmarked attempt: a run whose end
   * this one saw had none before.
   */
  private ensureNextAttempt(dir: string, run: Run, search: boolean): void {
    if (this.retrying.has(run.id) || readNextAttempt(dir) !== undefined) return;
    this.retrying.add(run.id);
    try {
      const first = run.job.attempt?.of ?? run.id;
      const env = this.envs.get(run.job.workflow?.id ?? first);
      let next = search ? findNextAttempt(run)?.id : undefined;
      if (next === undefined) {
        if (!env) this.log.warn('attempt-env-unknown', { runId: run.id, message: 'qwexd restarted since the run was submitted: the attempt starts from qwexd\'s environment' });
        const [created] = this.supervisor.submit(run.project, [nextAttemptJob(run)], env ?? submitterEnv(), [run.provenance ?? null]);
        next = created!.id;
        this.log.info('attempt-created', { runId: run.id, attempt: next, number: created!.job.attempt?.number });
        const wf = run.job.workflow ? this.trackedOf(run.job.workflow.id, run.project) : undefined;
        if (wf && run.job.workflow) {
          wf.record = { ...wf.record, runs: { ...wf.record.runs, [run.job.workflow.stage]: next } };
          writeWorkflow(wf.dir, wf.record);
        }
      }
      writeNextAttempt(dir, next);
      if (env && !run.job.workflow) this.envs.set(first, env);
    } finally {
      this.retrying.delete(run.id);
    }
  }

  private createStageRuns(wf: Tracked, plans: readonly StagePlan[], env: Record<string, string>): void {
    const { record } = wf;
    const jobs = plans.map((p) => ({ ...p.job, workflow: { id: record.id, stage: p.name } }));
    wf.creating = true;
    let runs: Run[];
    try {
      runs = this.supervisor.submit(record.project, jobs, env, plans.map(() => record.provenance ?? null));
    } finally {
      wf.creating = false;
    }
    const created = Object.fromEntries(runs.map((r, i) => [plans[i]!.name, r.id]));
    wf.record = { ...wf.record, runs: { ...wf.record.runs, ...created } };
    writeWorkflow(wf.dir, wf.record);
    this.supervisor.poke();
  }

  /** Takes over an unfinished workflow found on disk: its current runs from the runs themselves, missing stage runs created, a cancel finished. */
  private async adopt(record: WorkflowRecord): Promise<Tracked> {
    const wf: Tracked = { record, dir: workflowDir(record.project, record.id) };
    this.tracked.set(record.id, wf);
    const runs = { ...record.runs };
    for (const [stage, id] of Object.entries(newestStageRuns(record))) if (runs[stage] === undefined || id > runs[stage]) runs[stage] = id;
    if (JSON.stringify(runs) !== JSON.stringify(record.runs)) {
      wf.record = { ...record, runs };
      writeWorkflow(wf.dir, wf.record);
    }
    const missing = record.stages.filter((s) => runs[s.name] === undefined);
    if (missing.length > 0 && !record.cancelRequested) {
      this.log.warn('workflow-stages-created-late', { id: record.id, stages: missing.map((s) => s.name) });
      this.createStageRuns(wf, missing, this.envs.get(record.id) ?? submitterEnv());
    }
    if (record.cancelRequested) await this.cancelStages(wf);
    this.update(wf);
    return wf;
  }

  /** The workflow, tracked if it is not finished. */
  private async load(ref: { id: string; project?: string }): Promise<Tracked> {
    const projects = [...(ref.project ? [ref.project] : []), ...this.supervisor.store.runIndex().projects().filter((p) => p !== ref.project)];
    const found = resolveWorkflow(ref.id, projects);
    const tracked = this.tracked.get(found.id);
    if (tracked) return tracked;
    const record = readWorkflow(found.dir);
    return isWorkflowDone(record.status) ? { record, dir: found.dir } : this.adopt(record);
  }

  private trackedOf(id: string, project: string): Tracked | undefined {
    const tracked = this.tracked.get(id);
    if (tracked) return tracked;
    // A record that cannot be read now (EMFILE, EIO) throws: every caller logs it and asks again, rather than cancel stage runs.
    const record = readWorkflowIfAny(workflowDir(project, id));
    if (record === undefined) return undefined;
    const wf = { record, dir: workflowDir(project, id) };
    if (!isWorkflowDone(wf.record.status)) this.tracked.set(id, wf);
    return wf;
  }

  /** Writes the workflow's record when its derived state changed; forgets it once it is finished. */
  private update(wf: Tracked): void {
    const state = deriveState(wf.record, this.currentRuns(wf));
    const { record } = wf;
    if (state.status !== record.status || state.exitCode !== record.exitCode || state.startedAt !== record.startedAt || state.finishedAt !== record.finishedAt) {
      const { startedAt: _s, finishedAt: _f, ...rest } = record;
      wf.record = { ...rest, ...state };
      writeWorkflow(wf.dir, wf.record);
      this.log.info('workflow-state', { id: record.id, status: state.status, exitCode: state.exitCode });
      if (isWorkflowDone(state.status) && !isWorkflowDone(record.status)) this.tellEnd(wf);
    }
    if (isWorkflowDone(state.status)) {
      this.tracked.delete(record.id);
      this.envs.delete(record.id);
    }
  }

  private markStarted(wf: Tracked): void {
    if (wf.record.status !== 'pending') return;
    wf.record = { ...wf.record, status: 'running', startedAt: wf.record.startedAt ?? new Date().toISOString() };
    writeWorkflow(wf.dir, wf.record);
  }

  private async cancelStages(wf: Tracked): Promise<void> {
    // Each stage run not yet ended is cancelled here; one that never started records why (whichever of this
    // and the queue's admission rule, which says the same, claims it first). Running ones are stopped.
    const reason = { code: ErrorCode.NotStarted, message: `workflow ${wf.record.id} was cancelled` };
    for (const run of this.currentRuns(wf).values()) {
      if (isTerminal(run.status)) continue;
      await this.supervisor.cancel(runDir(run.project, run.id), undefined, reason).catch((error: unknown) => {
        this.log.warn('workflow-cancel-stage-failed', { runId: run.id, message: (error as Error).message });
      });
    }
    this.supervisor.poke();
  }

  private tellEnd(wf: Tracked): void {
    const view = this.view(wf);
    for (const listener of this.endListeners) listener(view);
  }

  private view(wf: Tracked): WorkflowView {
    return workflowView(wf.record, this.currentRuns(wf), (id) => this.supervisor.waitReason(runDir(wf.record.project, id)));
  }

  private currentRuns(wf: Tracked): Map<string, Run> {
    const runs = new Map<string, Run>();
    for (const [stage, id] of Object.entries(wf.record.runs)) {
      const run = this.readRun(id, wf.record.project, false);
      if (run) runs.set(stage, run);
    }
    return runs;
  }

  /** A run's record by id (in `project`, else wherever the index says); `awaited`: look at it again at the next sweep while it is active. */
  private readRun(id: string, project: string, awaited: boolean): Run | undefined {
    const found = findRun(this.supervisor.store, id, project);
    if (found && awaited && !isTerminal(found.run.status)) this.wakeups.awaiting(found.dir);
    return found?.run;
  }

  private workflowCancelled(run: Run): boolean {
    const id = run.job.workflow?.id;
    return id !== undefined && this.trackedOf(id, run.project)?.record.cancelRequested === true;
  }
}
