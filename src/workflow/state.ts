import { exitCodeOf, isTerminal, type Run } from '../run/model.js';
import { willRetry } from './retry.js';
import type { StageView, WorkflowRecord, WorkflowStatus, WorkflowView } from './types.js';

export interface DerivedState {
  status: WorkflowStatus;
  exitCode: number | null;
  startedAt?: string;
  finishedAt?: string;
}

/**
 * A workflow's status from its stages' current runs: active while a stage
 * has no run yet, runs, waits, or will be retried; once none is, `failed`
 * when a stage failed (or was lost) without continue_on_failure, else
 * `cancelled` when a stage was cancelled, else `succeeded`.
 */
export function deriveState(record: WorkflowRecord, runs: ReadonlyMap<string, Run>): DerivedState {
  const stages = record.stages.map((plan) => ({ plan, run: runs.get(plan.name) }));
  const started = stages.map((s) => s.run?.startedAt).filter((t): t is string => t !== undefined).sort();
  const startedAt = record.startedAt ?? started[0];
  const active = stages.some(({ run }) => !run || !isTerminal(run.status) || (willRetry(run) && !record.cancelRequested));
  if (active) {
    const anyStarted = startedAt !== undefined || stages.some(({ run }) => run && isTerminal(run.status));
    return { status: anyStarted ? 'running' : 'pending', exitCode: null, ...(startedAt ? { startedAt } : {}) };
  }
  const finished = stages.map((s) => s.run?.finishedAt).filter((t): t is string => t !== undefined).sort();
  const finishedAt = finished.at(-1) ?? new Date().toISOString();
  const firstFailed = stages.find(({ plan, run }) => (run!.status === 'failed' || run!.status === 'lost') && !plan.continueOnFailure);
  if (firstFailed) return { status: 'failed', exitCode: exitCodeOf(firstFailed.run!), ...(startedAt ? { startedAt } : {}), finishedAt };
  if (stages.some(({ run }) => run!.status === 'cancelled')) return { status: 'cancelled', exitCode: 130, ...(startedAt ? { startedAt } : {}), finishedAt };
  return { status: 'succeeded', exitCode: 0, ...(startedAt ? { startedAt } : {}), finishedAt };
}

/** What `qwex workflow status` shows: the record's facts, the derived status, and each stage's current run. */
export function workflowView(record: WorkflowRecord, runs: ReadonlyMap<string, Run>, waitReason: (runId: string) => string | undefined = () => undefined): WorkflowView {
  const state = deriveState(record, runs);
  const stages: StageView[] = record.stages.map((plan) => {
    const run = runs.get(plan.name);
    const retrying = run !== undefined && willRetry(run) && !record.cancelRequested;
    const reason = !run
      ? 'not created yet'
      : run.status === 'pending'
        ? waitReason(run.id)
        : retrying
          ? `attempt ${(run.job.attempt?.number ?? 1) + 1} of ${run.job.retry!.limit + 1} to come`
          : run.status === 'succeeded'
            ? undefined
            : run.error?.message;
    return {
      name: plan.name,
      needs: plan.needs,
      continueOnFailure: plan.continueOnFailure,
      backend: plan.job.backend,
      runId: run?.id ?? null,
      status: run?.status ?? 'pending',
      exitCode: run?.exitCode ?? null,
      ...(run?.job.attempt ? { attempt: run.job.attempt.number } : {}),
      ...(run?.startedAt ? { startedAt: run.startedAt } : {}),
      ...(run?.finishedAt ? { finishedAt: run.finishedAt } : {}),
      ...(reason ? { reason } : {}),
      ...(retrying ? { retrying: true } : {}),
    };
  });
  return {
    id: record.id,
    name: record.name,
    project: record.project,
    source: record.source,
    status: state.status,
    exitCode: state.exitCode,
    createdAt: record.createdAt,
    ...(state.startedAt ? { startedAt: state.startedAt } : {}),
    ...(state.finishedAt ? { finishedAt: state.finishedAt } : {}),
    ...(record.cancelRequested ? { cancelRequested: true } : {}),
    ...(record.resumed ? { resumed: record.resumed } : {}),
    snapshot: record.snapshot,
    stages,
  };
}
