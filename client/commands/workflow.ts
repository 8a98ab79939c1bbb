import { loadConfig } from '../../src/config/config.js';
import { submitterEnv } from '../../src/config/job.js';
import { distinctPrefixLength, shortId } from '../../src/ids.js';
import { runDir } from '../../src/paths.js';
import { isTerminal, type RunStatus } from '../../src/run/model.js';
import { WorkflowService } from '../../src/service/workflows.js';
import { topologicalOrder } from '../../src/workflow/definition.js';
import { planWorkflow } from '../../src/workflow/plan.js';
import { isWorkflowDone, type WorkflowStatus, type WorkflowView } from '../../src/workflow/types.js';
import type { Context } from '../context.js';
import { writer } from '../context.js';
import { parseCount } from '../parse.js';
import { formatAge, formatDuration, paint, runDuration, styleFor, summaryLine, table, type Style } from '../render.js';

/**
 * `qwex workflow run|ps|status|cancel|retry|wait`. Workflows are
 * supervised by qwexd, started here when it is not running.
 */
interface FollowOptions {
  detach?: boolean;
  json?: boolean;
  quiet?: boolean;
}

async function open(ctx: Context): Promise<WorkflowService> {
  return WorkflowService.open(ctx.store, { onStart: (pid) => process.stderr.write(`started qwexd (pid ${pid}) to supervise the workflow\n`) });
}

export async function run(ctx: Context, name: string | undefined, options: FollowOptions): Promise<number> {
  const { config } = await loadConfig(ctx.project);
  // Every stage is checked, and the one snapshot taken, before anything runs.
  const plan = await planWorkflow(config, ctx.project, name);
  const service = await open(ctx);
  try {
    const view = await service.submit({
      project: ctx.project,
      name: plan.name,
      source: plan.source,
      stages: plan.stages,
      env: submitterEnv(),
      ...(plan.provenance ? { provenance: plan.provenance } : {}),
    });
    return await afterSubmit(service, ctx, view, options);
  } finally {
    await service.close();
  }
}

export async function retry(ctx: Context, id: string, options: FollowOptions): Promise<number> {
  const service = await open(ctx);
  try {
    return await afterSubmit(service, ctx, await service.retry({ id, project: ctx.project }, submitterEnv()), options);
  } finally {
    await service.close();
  }
}

export async function status(ctx: Context, id: string, options: { json?: boolean }): Promise<number> {
  const service = await open(ctx);
  try {
    const view = await service.get({ id, project: ctx.project });
    process.stdout.write(options.json ? `${JSON.stringify(view, null, 2)}\n` : `${workflowText(view, styleFor(process.stdout))}\n`);
    return 0;
  } finally {
    await service.close();
  }
}

export async function ps(ctx: Context, options: { all?: boolean; json?: boolean; last: string }): Promise<number> {
  const service = await open(ctx);
  try {
    const limit = parseCount(options.last, '--last');
    const views = await service.list({ ...(options.all ? {} : { project: ctx.project }), limit });
    if (options.json) {
      process.stdout.write(`${JSON.stringify(views, null, 2)}\n`);
      return 0;
    }
    if (views.length === 0) {
      process.stderr.write('no workflows yet (qwex workflow run starts one)\n');
      return 0;
    }
    const style = styleFor(process.stdout);
    const idLength = distinctPrefixLength(views.map((v) => v.id));
    const rows = views.map((v) => [
      v.id.slice(0, idLength),
      paint(style, COLOUR[v.status], v.status),
      v.exitCode === null ? '' : String(v.exitCode),
      formatAge(v.createdAt),
      duration(v.startedAt, v.finishedAt),
      v.name ?? '(stages)',
      v.stages.map((s) => `${s.name}:${s.status}`).join(' '),
    ]);
    process.stdout.write(`${table(['ID', 'STATUS', 'EXIT', 'CREATED', 'DURATION', 'WORKFLOW', 'STAGES'], rows, style)}\n`);
    return 0;
  } finally {
    await service.close();
  }
}

export async function cancel(ctx: Context, id: string, options: { json?: boolean; wait?: boolean }): Promise<number> {
  const service = await open(ctx);
  try {
    let view = await service.cancel({ id, project: ctx.project });
    if (options.wait !== false) view = await waitDone(service, ctx, view.id);
    process.stdout.write(options.json ? `${JSON.stringify(view, null, 2)}\n` : `${workflowText(view, styleFor(process.stdout))}\n`);
    return 0;
  } finally {
    await service.close();
  }
}

export async function wait(ctx: Context, id: string, options: { json?: boolean }): Promise<number> {
  const service = await open(ctx);
  try {
    const view = await waitDone(service, ctx, id);
    if (options.json) process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
    return view.status === 'succeeded' ? 0 : (view.exitCode ?? 1);
  } finally {
    await service.close();
  }
}

async function afterSubmit(service: WorkflowService, ctx: Context, view: WorkflowView, options: FollowOptions): Promise<number> {
  if (options.detach) {
    process.stdout.write(options.json ? `${JSON.stringify(view, null, 2)}\n` : `${view.id}\n`);
    return 0;
  }
  // With --json, stdout is the workflow's JSON alone: the stages' output goes to stderr.
  const final = await follow(service, ctx, view, options.quiet === true, options.json === true);
  if (options.json) process.stdout.write(`${JSON.stringify(final, null, 2)}\n`);
  if (!isWorkflowDone(final.status)) return 130;
  return final.status === 'succeeded' ? 0 : (final.exitCode ?? 1);
}

const POLL_MS = 250;

/** Until the workflow has ended: a poll of qwexd, which finishes its record as soon as the last stage's run ends. */
async function waitDone(service: WorkflowService, ctx: Context, id: string, signal?: AbortSignal): Promise<WorkflowView> {
  for (;;) {
    const view = await service.get({ id, project: ctx.project });
    if (isWorkflowDone(view.status) || signal?.aborted) return view;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/**
 * Streams each stage's output in turn (in the order of the graph; a stage
 * that ran beside another is replayed when its turn comes), with a line
 * for each stage's start and end. Ctrl-C cancels the workflow; a second
 * stops waiting (it goes on).
 */
async function follow(service: WorkflowService, ctx: Context, submitted: WorkflowView, quiet: boolean, outputToStderr: boolean): Promise<WorkflowView> {
  const onStdout = writer(outputToStderr ? process.stderr : process.stdout);
  const onStderr = writer(process.stderr);
  const errStyle = styleFor(process.stderr);
  const say = (line: string): void => {
    if (!quiet) process.stderr.write(`${line}\n`);
  };
  say(`${paint(errStyle, 'bold', `workflow ${shortId(submitted.id)}`)}${submitted.name ? ` (${submitted.name})` : ''}: ${submitted.stages.map((s) => s.name).join(' → ')}`);
  const detach = new AbortController();
  let interrupts = 0;
  const onInterrupt = (): void => {
    interrupts++;
    if (interrupts === 1) {
      say('cancelling the workflow (Ctrl-C again to stop waiting)');
      service.cancel({ id: submitted.id, project: ctx.project }).catch(() => {});
    } else {
      detach.abort();
    }
  };
  process.on('SIGINT', onInterrupt);
  const followed = new Set<string>();
  try {
    for (;;) {
      const view = await service.get({ id: submitted.id, project: ctx.project });
      const order = topologicalOrder(view.stages);
      const at = order.findIndex((s) => s.runId !== null && !followed.has(s.runId));
      // A stage before it is to be retried: its next attempt comes first, in order.
      const next = at === -1 || order.slice(0, at).some((s) => s.retrying) ? undefined : order[at];
      if (next === undefined) {
        if (isWorkflowDone(view.status) || detach.signal.aborted) {
          say(`${paint(errStyle, COLOUR[view.status], `workflow ${shortId(view.id)} ${view.status}`)}${duration(view.startedAt, view.finishedAt) ? ` in ${duration(view.startedAt, view.finishedAt)}` : ''}`);
          return view;
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        continue;
      }
      followed.add(next.runId!);
      say(`${paint(errStyle, 'cyan', '▶')}  stage ${paint(errStyle, 'bold', next.name)} · run ${next.runId!.slice(0, idLength(view))} (${next.backend})${next.attempt ? ` · attempt ${next.attempt}` : ''}`);
      const final = await service.runs.follow(
        { id: next.runId!, dir: runDir(view.project, next.runId!) },
        { onStdout, onStderr, signal: detach.signal },
      );
      if (detach.signal.aborted && !isTerminal(final.status)) {
        say(`stopped waiting; workflow ${view.id} goes on`);
        return service.get({ id: submitted.id, project: ctx.project });
      }
      say(`stage ${next.name}: ${summaryLine(errStyle, final)}`);
    }
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

const COLOUR: Record<WorkflowStatus | RunStatus, 'gray' | 'cyan' | 'green' | 'red' | 'yellow' | 'magenta'> = {
  pending: 'gray',
  running: 'cyan',
  succeeded: 'green',
  failed: 'red',
  cancelled: 'yellow',
  lost: 'magenta',
};

/** Stage runs created together share their first 13 characters: as many as tell them apart. */
function idLength(view: WorkflowView): number {
  return distinctPrefixLength(view.stages.flatMap((s) => (s.runId ? [s.runId] : [])));
}

function duration(startedAt: string | undefined, finishedAt: string | undefined): string {
  const ms = runDuration({ startedAt, finishedAt });
  return ms === undefined ? '' : formatDuration(ms);
}

function workflowText(view: WorkflowView, style: Style): string {
  const head: [string, string][] = [
    ['id', view.id],
    ...(view.name ? [['name', view.name] as [string, string]] : []),
    ['status', `${paint(style, COLOUR[view.status], view.status)}${view.exitCode === null ? '' : ` (exit ${view.exitCode})`}${view.cancelRequested && !isWorkflowDone(view.status) ? ', cancelling' : ''}`],
    ['source', view.source],
    ['created', view.createdAt],
    ...(view.startedAt ? [['started', view.startedAt] as [string, string]] : []),
    ...(view.finishedAt ? [['finished', view.finishedAt] as [string, string]] : []),
    ...(view.resumed ? [['retried', `${view.resumed} time(s)`] as [string, string]] : []),
  ];
  const width = Math.max(...head.map(([k]) => k.length));
  const rows = view.stages.map((s) => [
    s.name,
    paint(style, COLOUR[s.status], `${s.status}${s.attempt ? ` (attempt ${s.attempt})` : ''}`),
    s.exitCode === null ? '' : String(s.exitCode),
    s.backend,
    s.runId ? s.runId.slice(0, idLength(view)) : '',
    duration(s.startedAt, s.finishedAt),
    s.reason ?? '',
  ]);
  return [
    ...head.map(([k, v]) => `${paint(style, 'gray', k.padEnd(width))}  ${v}`),
    '',
    table(['STAGE', 'STATUS', 'EXIT', 'BACKEND', 'RUN', 'DURATION', 'REASON'], rows, style),
  ].join('\n');
}
