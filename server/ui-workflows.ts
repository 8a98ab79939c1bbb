import type { WorkflowView } from '../src/cloud/api.js';
import { QwexError } from '../src/errors.js';
import { runDir } from '../src/paths.js';
import type { Run } from '../src/run/model.js';
import type { RunStore } from '../src/store/run-store.js';
import { newestStageRuns, readWorkflow, resolveWorkflow } from '../src/workflow/record.js';
import { workflowView } from '../src/workflow/state.js';
import type { WorkflowLookup } from './runs-source-sql.js';

/**
 * `qwex ui`'s workflows: the workflow records of every project the run
 * index knows (this user's alone: the index is), each stage with its
 * newest run, as `qwex workflow status` shows them. qwexcloud has none (it
 * does not supervise workflows), and answers 404.
 */
export function localWorkflows(store: RunStore): WorkflowLookup {
  return async (_principal, id) => {
    let found: { id: string; project: string; dir: string };
    try {
      found = resolveWorkflow(id, store.runIndex().projects());
    } catch (error) {
      if (error instanceof QwexError) return undefined;
      throw error;
    }
    const record = readWorkflow(found.dir);
    const runs = new Map<string, Run>();
    for (const [stage, runId] of Object.entries(newestStageRuns(record))) {
      try {
        runs.set(stage, store.read(runDir(record.project, runId)));
      } catch {
        // A stage run without a readable record shows as not created yet.
      }
    }
    const view = workflowView(record, runs);
    return {
      id: view.id,
      status: view.status,
      stages: view.stages.map((s) => ({ name: s.name, runId: s.runId, status: s.status, exitCode: s.exitCode, needs: [...s.needs] })),
    } satisfies WorkflowView;
  };
}
