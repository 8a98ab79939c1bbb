import type { Job, Provenance, RunStatus } from '../run/model.js';

/**
 * A workflow: stages, each an ordinary run on its own backend, linked by
 * their dependencies and sharing one workspace snapshot. Its record is
 * `.qwex/workflows/<id>/workflow.json`, written once per change by qwexd;
 * its status is derived from its stage runs' records (see state.ts), so
 * whoever supervises it next can finish it from what is on disk.
 */
export const WORKFLOW_STATUSES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type WorkflowStatus = (typeof WORKFLOW_STATUSES)[number];

/** One stage as submitted: its resolved job and its place in the graph. */
export interface StagePlan {
  name: string;
  /** Stages that must succeed (or fail with continueOnFailure) before this one starts. */
  needs: string[];
  /** Its failure neither stops the stages after it nor fails the workflow. */
  continueOnFailure: boolean;
  job: Job;
}

/** workflow.json. */
export interface WorkflowRecord {
  /** Shape version of workflow.json. */
  version: 1;
  id: string;
  /** Its name under `workflows:` in qwex.yaml; null for the top-level `stages:`. */
  name: string | null;
  project: string;
  /** The configuration file the stages came from. */
  source: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  status: WorkflowStatus;
  exitCode: number | null;
  /** The workspace snapshot (manifest id) every stage runs; null when no stage has one. */
  snapshot: string | null;
  provenance?: Provenance;
  stages: StagePlan[];
  /** Each stage's current run: its newest (a retry attempt or a `workflow retry` replaces the one before). */
  runs: Record<string, string>;
  cancelRequested?: boolean;
  /** How many times `qwex workflow retry` resumed it. */
  resumed?: number;
}

export interface StageView {
  name: string;
  needs: string[];
  continueOnFailure: boolean;
  backend: string;
  /** The stage's current run (its latest attempt); null until it is created. */
  runId: string | null;
  status: RunStatus;
  exitCode: number | null;
  attempt?: number;
  startedAt?: string;
  finishedAt?: string;
  /** Why it waits, or why it ended without succeeding. */
  reason?: string;
  /** Its run failed and another attempt is coming (it then becomes the stage's run). */
  retrying?: boolean;
}

/** What `qwex workflow status --json` prints and the protocol returns. */
export interface WorkflowView {
  id: string;
  name: string | null;
  project: string;
  source: string;
  status: WorkflowStatus;
  /** 0 when it succeeded, the first failed stage's exit code when it failed, 130 when cancelled; null while it runs. */
  exitCode: number | null;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  cancelRequested?: boolean;
  resumed?: number;
  snapshot: string | null;
  stages: StageView[];
}

export function isWorkflowDone(status: WorkflowStatus): boolean {
  return status === 'succeeded' || status === 'failed' || status === 'cancelled';
}
