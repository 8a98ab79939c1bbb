import { shortId } from '../ids.js';
import { isTerminal, type Run } from '../run/model.js';
import { willRetry } from './retry.js';
import type { WorkflowRecord } from './types.js';

/** What a dependency rule says about a queued run: it may go on, it waits (why), or it never will (why). */
export type DependencyDecision = { ready: true } | { wait: string } | { cancel: string };

/** Reads a run by id; undefined when it has no readable record. */
export type RunReader = (id: string) => Run | undefined;

/**
 * `--after` / `--after-any`: the run waits while any run it names is
 * active; with `require: success`, one that ended otherwise cancels it.
 */
export function afterDecision(run: Run, read: RunReader): DependencyDecision {
  const after = run.job.after;
  if (!after) return { ready: true };
  const waiting: string[] = [];
  for (const id of after.runs) {
    const dep = read(id);
    if (!dep) return { cancel: `run ${id}, which it runs after, has no record` };
    if (!isTerminal(dep.status)) {
      waiting.push(`run ${shortId(id)} (${dep.status})`);
      continue;
    }
    if (after.require === 'success' && dep.status !== 'succeeded') return { cancel: `run ${id}, which it runs after, ${outcome(dep)}` };
  }
  return waiting.length > 0 ? { wait: `waiting for ${waiting.join(', ')}` } : { ready: true };
}

/**
 * A workflow stage's run: it waits while a stage it needs has no run yet,
 * is active or will be retried; it is cancelled when one of them failed
 * for good (unless that stage continues on failure), when any other stage
 * of the workflow failed for good (a failure stops the rest), when the
 * workflow was cancelled, or when a newer run replaced it.
 */
export function stageDecision(record: WorkflowRecord, run: Run, read: RunReader): DependencyDecision {
  const stage = run.job.workflow?.stage ?? '';
  const plan = record.stages.find((s) => s.name === stage);
  if (!plan) return { cancel: `workflow ${record.id} has no stage "${stage}"` };
  if (record.cancelRequested) return { cancel: `workflow ${record.id} was cancelled` };
  const current = record.runs[stage];
  if (current !== undefined && current > run.id) return { cancel: `run ${current} replaced it as stage ${stage}` };
  const waiting: string[] = [];
  for (const need of plan.needs) {
    const id = record.runs[need];
    const dep = id === undefined ? undefined : read(id);
    if (!dep) {
      waiting.push(`stage ${need} (not created yet)`);
      continue;
    }
    if (!isTerminal(dep.status)) waiting.push(`stage ${need} (${dep.status})`);
    else if (dep.status === 'succeeded') continue;
    else if (willRetry(dep)) waiting.push(`stage ${need} (to be retried)`);
    else if (!record.stages.find((s) => s.name === need)?.continueOnFailure) return { cancel: `stage ${need} ${outcome(dep)}` };
  }
  for (const other of record.stages) {
    if (other.name === stage || plan.needs.includes(other.name) || other.continueOnFailure) continue;
    const id = record.runs[other.name];
    const dep = id === undefined ? undefined : read(id);
    if (dep && (dep.status === 'failed' || dep.status === 'lost') && !willRetry(dep)) return { cancel: `stage ${other.name} ${outcome(dep)}` };
  }
  return waiting.length > 0 ? { wait: `waiting for ${waiting.join(', ')}` } : { ready: true };
}

/** "failed (exit 3)", "was cancelled", "was lost": how a run ended, for a reason. */
function outcome(run: Run): string {
  if (run.status === 'cancelled') return 'was cancelled';
  if (run.status === 'lost') return 'was lost';
  if (run.signal) return `failed (${run.signal})`;
  if (run.exitCode !== null && run.exitCode !== 0) return `failed (exit ${run.exitCode})`;
  return run.error ? `failed (${run.error.code})` : 'failed';
}
