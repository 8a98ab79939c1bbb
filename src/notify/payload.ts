import { displayCommand, type Run, type RunStatus } from '../run/model.js';
import { redactSecrets } from '../errors.js';
import { shortId } from '../ids.js';
import type { NotifyEvent } from './spec.js';
import { formatDuration } from '../duration.js';

/**
 * What an event says, as every target receives it: the webhook's JSON body
 * is exactly this (plus `delivery`), and Slack, email and the local command
 * are made from it. Built once, when the event is journalled, so that every
 * attempt (after a restart too) sends the same facts.
 */
export interface EventPayload {
  /** `run.ended`, `run.waiting` or `workflow.ended`. */
  type: 'run.ended' | 'run.waiting' | 'workflow.ended';
  /** The event that fired (as named in `on:`). */
  event: NotifyEvent;
  /** When the event happened (ISO 8601). */
  time: string;
  run?: RunSummary;
  workflow?: WorkflowSummary;
}

export interface RunSummary {
  id: string;
  name: string | null;
  status: RunStatus;
  /** The command as a person would type it, secret-looking assignments masked. */
  command: string;
  exitCode: number | null;
  signal: string | null;
  endReason: string | null;
  error: { code: string; message: string } | null;
  backend: string;
  project: string;
  host: string;
  user: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** From start to end (or to now, for a waiting run: how long it has waited since it was created). */
  durationMs: number | null;
  /** The run on the dashboard, when one is configured. */
  url: string | null;
  /** qwexcloud: the cluster (target) and user of the run. */
  target?: string;
  owner?: string;
}

/** What a workflow's end says: the shape `qwex workflow status --json` prints, and a link. */
export interface WorkflowEnd {
  id: string;
  name?: string | null;
  status: RunStatus;
  /** The project (qwexd) or user (qwexcloud) it belongs to. */
  project: string;
  stages: { name: string; runId: string | null; status: RunStatus | string; exitCode: number | null }[];
  startedAt?: string | null;
  finishedAt?: string | null;
}

export interface WorkflowSummary extends WorkflowEnd {
  durationMs: number | null;
  url: string | null;
}

export function runSummary(run: Run, options: { dashboardUrl?: string | undefined; target?: string; owner?: string; now?: number } = {}): RunSummary {
  const started = run.startedAt ? Date.parse(run.startedAt) : undefined;
  const ended = run.finishedAt ? Date.parse(run.finishedAt) : undefined;
  const durationMs = started !== undefined && ended !== undefined ? Math.max(0, ended - started) : run.status === 'pending' ? Math.max(0, (options.now ?? Date.now()) - Date.parse(run.createdAt)) : null;
  return {
    id: run.id,
    name: run.job.name ?? null,
    status: run.status,
    command: redactSecrets(displayCommand(run.job)),
    exitCode: run.exitCode,
    signal: run.signal,
    endReason: run.endReason ?? null,
    error: run.error ? { code: run.error.code, message: redactSecrets(run.error.message) } : null,
    backend: run.job.backend,
    project: run.project,
    host: run.metadata.host,
    user: run.metadata.user,
    createdAt: run.createdAt,
    startedAt: run.startedAt ?? null,
    finishedAt: run.finishedAt ?? null,
    durationMs,
    url: linkTo(options.dashboardUrl, run.id),
    ...(options.target === undefined ? {} : { target: options.target }),
    ...(options.owner === undefined ? {} : { owner: options.owner }),
  };
}

export function runPayload(event: NotifyEvent, run: Run, options: Parameters<typeof runSummary>[1] = {}): EventPayload {
  return {
    type: event === 'waiting' ? 'run.waiting' : 'run.ended',
    event,
    time: new Date(options.now ?? Date.now()).toISOString(),
    run: runSummary(run, options),
  };
}

export function workflowPayload(workflow: WorkflowEnd, dashboardUrl?: string): EventPayload {
  const started = workflow.startedAt ? Date.parse(workflow.startedAt) : undefined;
  const ended = workflow.finishedAt ? Date.parse(workflow.finishedAt) : undefined;
  return {
    type: 'workflow.ended',
    event: 'workflow',
    time: new Date().toISOString(),
    workflow: {
      ...workflow,
      name: workflow.name ?? null,
      startedAt: workflow.startedAt ?? null,
      finishedAt: workflow.finishedAt ?? null,
      durationMs: started !== undefined && ended !== undefined ? Math.max(0, ended - started) : null,
      url: linkTo(dashboardUrl, workflow.id),
    },
  };
}

function linkTo(template: string | undefined, id: string): string | null {
  if (!template) return null;
  return template.includes('{id}') ? template.replaceAll('{id}', encodeURIComponent(id)) : `${template.replace(/\/+$/, '')}/${encodeURIComponent(id)}`;
}

/** The subject of an event (a run's or a workflow's id) and its one-line headline, for Slack, mail subjects and logs. */
export function headline(payload: EventPayload): string {
  if (payload.workflow) {
    const w = payload.workflow;
    return `workflow ${w.name ?? shortId(w.id)} ${w.status}${w.durationMs === null ? '' : ` in ${formatDuration(w.durationMs)}`}`;
  }
  const r = payload.run!;
  const who = r.name ? `${r.name} (${shortId(r.id)})` : shortId(r.id);
  if (payload.event === 'waiting') return `run ${who} has waited ${formatDuration(r.durationMs ?? 0)} in the queue`;
  const detail = r.status === 'succeeded' ? '' : r.signal ? ` (${r.signal})` : r.exitCode !== null && r.exitCode !== 0 ? ` (exit ${r.exitCode})` : r.endReason === 'timeout' ? ' (timeout)' : '';
  return `run ${who} ${r.status}${detail}${r.durationMs === null ? '' : ` in ${formatDuration(r.durationMs)}`}`;
}

/** The environment a local command target gets: the event's fields as QWEX_* variables. */
export function payloadEnv(payload: EventPayload, delivery: string): Record<string, string> {
  const env: Record<string, string> = { QWEX_EVENT: payload.event, QWEX_EVENT_TYPE: payload.type, QWEX_DELIVERY: delivery, QWEX_HEADLINE: headline(payload) };
  const put = (name: string, value: string | number | null | undefined): void => {
    if (value !== null && value !== undefined) env[name] = String(value);
  };
  if (payload.run) {
    const r = payload.run;
    put('QWEX_RUN_ID', r.id);
    put('QWEX_RUN_NAME', r.name);
    put('QWEX_RUN_STATUS', r.status);
    put('QWEX_RUN_COMMAND', r.command);
    put('QWEX_RUN_EXIT_CODE', r.exitCode);
    put('QWEX_RUN_SIGNAL', r.signal);
    put('QWEX_RUN_END_REASON', r.endReason);
    put('QWEX_RUN_ERROR', r.error?.message);
    put('QWEX_RUN_BACKEND', r.backend);
    put('QWEX_RUN_PROJECT', r.project);
    put('QWEX_RUN_DURATION_MS', r.durationMs);
    put('QWEX_RUN_URL', r.url);
  }
  if (payload.workflow) {
    const w = payload.workflow;
    put('QWEX_WORKFLOW_ID', w.id);
    put('QWEX_WORKFLOW_NAME', w.name);
    put('QWEX_WORKFLOW_STATUS', w.status);
    put('QWEX_WORKFLOW_DURATION_MS', w.durationMs);
    put('QWEX_WORKFLOW_URL', w.url);
  }
  return env;
}

export { formatDuration };
