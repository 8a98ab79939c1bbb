import { redactEnv, redactSecrets } from '../src/errors.js';
import { distinctPrefixLength, shortId } from '../src/ids.js';
import type { ListedRun, RunView } from '../src/protocol.js';
import { findBackend } from '../src/backends/registry.js';
import { describeRequest } from '../src/gpu/request.js';
import { displayCommand, type Run, type RunStatus } from '../src/run/model.js';
import type { DeliveryInfo } from '../src/notify/journal.js';
import { publicSpec } from '../src/notify/spec.js';
import { paint, type Colour, type Style } from './style.js';
import { formatDuration } from '../src/duration.js';

export { paint, styleFor, type Style } from './style.js';

const STATUS_LOOK: Record<RunStatus, { symbol: string; colour: Colour }> = {
  pending: { symbol: '…', colour: 'gray' },
  running: { symbol: '⚙', colour: 'cyan' },
  succeeded: { symbol: '✔', colour: 'green' },
  failed: { symbol: '✖', colour: 'red' },
  cancelled: { symbol: '⊘', colour: 'yellow' },
  lost: { symbol: '?', colour: 'magenta' },
};

function lead(style: Style, status: RunStatus): string {
  const look = STATUS_LOOK[status];
  return style.tty ? `${paint(style, look.colour, look.symbol)}  ` : '';
}

export function startLine(style: Style, run: Run, via?: string): string {
  const what = via ? `submitted to ${via}` : 'started';
  return `${lead(style, 'running')}run ${paint(style, 'bold', shortId(run.id))} ${what} (${run.backend.name})`;
}

/** "✔  run 019aa011-7c2e succeeded in 2m 15s · 1 artifact (50.0 MB)" */
export function summaryLine(style: Style, run: Run): string {
  const parts = [`${lead(style, run.status)}run ${paint(style, 'bold', shortId(run.id))} ${paint(style, STATUS_LOOK[run.status].colour, run.status)}${outcomeDetail(run)}`];
  const duration = runDuration(run);
  if (duration !== undefined) parts[0] += ` in ${formatDuration(duration)}`;
  if (run.artifacts) {
    const a = run.artifacts;
    parts.push(a.count === 0 ? 'no artifacts' : `${a.count} artifact${a.count === 1 ? '' : 's'} (${formatBytes(a.bytes)})`);
    if (a.error) parts.push(paint(style, 'yellow', a.error));
  }
  let line = parts.join(' · ');
  if (run.error && run.status !== 'succeeded') line += `\n${paint(style, 'gray', `   ${run.error.message}`)}`;
  return line;
}

function outcomeDetail(run: Run): string {
  if (run.status === 'succeeded') return '';
  if (run.endReason === 'timeout') return ' (timeout)';
  if (run.signal) return ` (${run.signal})`;
  if (run.exitCode !== null && run.exitCode !== 0) return ` (exit ${run.exitCode})`;
  return '';
}

export function runDuration(run: Pick<Run, 'startedAt' | 'finishedAt'>, now = Date.now()): number | undefined {
  if (!run.startedAt) return undefined;
  const end = run.finishedAt ? Date.parse(run.finishedAt) : now;
  return Math.max(0, end - Date.parse(run.startedAt));
}

export { formatDuration };

/** Decimal units, as `ls -h --si` and most download tools show them. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

export function formatAge(iso: string, now = Date.now()): string {
  const ms = now - Date.parse(iso);
  if (ms < 60_000) return `${Math.max(0, Math.floor(ms / 1000))}s ago`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m ago`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)}h ago`;
  return iso.slice(0, 10);
}

/** The narrowest a shrunk column gets before a line is left to wrap. */
const MIN_SHRUNK_WIDTH = 10;

/**
 * Left-aligned columns; the last column is not padded. On a terminal
 * (`style.width`), the last column (a command, a reason) is cut with "…" so
 * that each line fits; the others, the ids among them, are never cut.
 */
export function table(headers: string[], rows: string[][], style: Style): string {
  const widths = headers.map((h, i) => Math.max(visible(h).length, ...rows.map((r) => visible(r[i] ?? '').length)));
  const last = headers.length - 1;
  const before = widths.slice(0, last).reduce((sum, w) => sum + w + 2, 0);
  const room = style.width === undefined ? undefined : Math.max(MIN_SHRUNK_WIDTH, style.width - before);
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === last ? (room === undefined ? c : fitCell(c, room)) : c + ' '.repeat(widths[i]! - visible(c).length)))
      .join('  ')
      .trimEnd();
  return [paint(style, 'gray', line(headers)), ...rows.map(line)].join('\n');
}

/** A cell cut to `width` visible characters; a painted cell keeps its colour (cut inside, reset after). */
function fitCell(cell: string, width: number): string {
  const text = visible(cell);
  if ([...text].length <= width) return cell;
  const cut = `${[...text].slice(0, width - 1).join('')}…`;
  return cell === text ? cut : cell.replace(text, cut);
}

function visible(text: string): string {
  return text.replace(/\u001b\[[0-9;]*m/g, '');
}

export function psTable(rows: ListedRun[], style: Style, options: { showProject: boolean }): string {
  const idLength = distinctPrefixLength(rows.map((r) => r.id));
  const showName = rows.some((r) => r.name);
  const showUsage = rows.some((r) => r.usage);
  const showGpus = rows.some((r) => r.gpus && r.gpus.length > 0);
  const showJob = rows.some((r) => r.recipe !== undefined || r.stage !== undefined || r.attempt !== undefined);
  const headers = [
    'ID', 'STATUS', 'EXIT', 'CREATED', 'DURATION', 'BACKEND',
    ...(showUsage ? ['CPU', 'MEM'] : []),
    ...(showGpus ? ['GPUS'] : []),
    ...(showJob ? ['JOB'] : []),
    ...(showName ? ['NAME'] : []),
    ...(options.showProject ? ['PROJECT'] : []),
    'COMMAND',
  ];
  const body = rows.map((r) => {
    const duration = runDuration({ startedAt: r.startedAt ?? undefined, finishedAt: r.finishedAt ?? undefined });
    const status = r.problem
      ? 'unreadable'
      : r.waiting
        ? `${r.waiting.phase}${r.waiting.position === undefined ? '' : ` #${r.waiting.position}`}${r.waiting.reason ? ` (${r.waiting.reason})` : ''}`
        : `${r.status}${r.queuePosition === undefined ? '' : ` #${r.queuePosition}`}${r.waitReason ? ` (${r.waitReason})` : ''}`;
    return [
      r.id.slice(0, idLength),
      paint(style, r.problem ? 'magenta' : r.waiting ? 'gray' : STATUS_LOOK[r.status].colour, status),
      r.signal ?? (r.exitCode === null ? '' : String(r.exitCode)),
      formatAge(r.createdAt),
      duration === undefined ? '' : formatDuration(duration),
      r.backend,
      ...(showUsage ? [r.usage ? `${r.usage.cpuPercent.toFixed(0)}%` : '', r.usage ? formatBytes(r.usage.rssBytes) : ''] : []),
      ...(showGpus ? [(r.gpus ?? []).map((g) => g.index).join(',')] : []),
      ...(showJob ? [jobColumn(r)] : []),
      ...(showName ? [r.name ?? ''] : []),
      ...(options.showProject ? [r.project] : []),
      // A terminal's width cuts the command (in table()); elsewhere a long one is cut here.
      style.width === undefined ? truncate(r.command, 60) : r.command.replace(/\s+/g, ' '),
    ];
  });
  return table(headers, body, style);
}

/** "train", "stage test", "train · attempt 2": the recipe or workflow stage a run executes, and which attempt it is. */
function jobColumn(r: ListedRun): string {
  const what = r.stage !== undefined ? `stage ${r.stage}` : (r.recipe ?? '');
  const attempt = r.attempt !== undefined && r.attempt > 1 ? `attempt ${r.attempt}` : '';
  return [what, attempt].filter((p) => p !== '').join(' · ');
}

function truncate(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}

/** The record as shown to people and in --json: env values of secret-looking names are masked, notification URLs shown without their secrets. */
export function publicRun(run: Run): Run {
  return { ...run, job: { ...run.job, env: redactEnv(run.job.env), ...(run.job.notify ? { notify: publicSpec(run.job.notify) } : {}) } };
}

/** What `qwex status` says of the run's recipe, attempts, workflow, dependencies and origin. */
function linkLines(view: RunView): [string, string][] {
  const { job } = view.run;
  const lines: [string, string][] = [];
  if (job.recipe) {
    const params = Object.entries(job.recipe.params).map(([k, v]) => `${k}=${v}`).join(' ');
    const now = view.recipeNow;
    const since = now === undefined ? '' : now.version === null ? ' (no longer in qwex.yaml)' : now.changed ? ` (changed since: now ${now.version})` : ' (unchanged since)';
    lines.push(['job', `${job.recipe.name} @ ${job.recipe.version}${since}${params ? ` · ${params}` : ''}`]);
  }
  if (job.retry) lines.push(['attempt', `${job.attempt?.number ?? 1} of ${job.retry.limit + 1}${job.attempt ? ` (first: ${job.attempt.of})` : ''}${view.nextAttempt ? ` · next: ${view.nextAttempt}` : ''}`]);
  if (job.workflow) lines.push(['workflow', `${job.workflow.id} · stage ${job.workflow.stage}`]);
  if (job.after) lines.push([job.after.require === 'success' ? 'after' : 'after any', job.after.runs.join(', ')]);
  if (job.rerunOf) lines.push(['rerun of', job.rerunOf]);
  return lines;
}

/** One line per delivery of the run's notifications: where, and how it went. */
export function deliveryLines(deliveries: readonly DeliveryInfo[]): string[] {
  return deliveries.map((d) => {
    const attempts = `${d.attempts} attempt${d.attempts === 1 ? '' : 's'}`;
    if (d.status === 'delivered') return `${d.event} → ${d.target}: delivered (${attempts}, ${d.deliveredAt})`;
    const last = d.lastError ? `; last: ${d.lastError}` : '';
    if (d.status === 'failed') return `${d.event} → ${d.target}: failed after ${attempts}${last}`;
    return `${d.event} → ${d.target}: pending (${attempts}${d.nextAttemptAt ? `, next ${d.nextAttemptAt}` : ''}${last})`;
  });
}

export function statusText(view: RunView, style: Style, deliveries: readonly DeliveryInfo[] = []): string {
  const { run, dir: runDir } = view;
  const lines: [string, string][] = [
    ['id', run.id],
    ['status', paint(style, STATUS_LOOK[run.status].colour, run.status)],
    ['command', redactSecrets(run.job.shell ? `sh -c ${JSON.stringify(run.job.command[0])}` : displayCommand(run.job))],
    ['cwd', run.job.cwd],
    ['backend', run.backend.name],
    ['created', run.createdAt],
  ];
  if (run.job.name) lines.splice(1, 0, ['name', run.job.name]);
  lines.push(...linkLines(view));
  if (run.startedAt) lines.push(['started', run.startedAt]);
  if (run.finishedAt) lines.push(['finished', run.finishedAt]);
  const duration = runDuration(run);
  if (duration !== undefined) lines.push(['duration', formatDuration(duration)]);
  if (run.exitCode !== null) lines.push(['exit code', String(run.exitCode)]);
  if (run.signal) lines.push(['signal', run.signal]);
  if (run.endReason) lines.push(['ended by', run.endReason]);
  if (run.error) lines.push(['error', run.error.message]);
  const backend = findBackend(run.job.backend);
  lines.push(...(backend?.describe?.(run) ?? []));
  if (run.gpus && run.gpus.length > 0) lines.push(['gpus', run.gpus.map((g) => `${g.index} ${g.uuid} (${g.name})`).join(', ')]);
  else if (run.job.gpus !== undefined) lines.push(['gpus', `asks for ${describeRequest(run.job.gpus)}`]);
  if (view.queuePosition !== undefined) lines.push(['queue', `#${view.queuePosition} in qwexd's queue`]);
  if (view.waitReason !== undefined) lines.push(['waiting for', view.waitReason]);
  const waiting = backend?.waiting?.(run);
  if (waiting) {
    const where = waiting.phase === 'queued' ? `queued in ${waiting.where ?? 'a queue'}${waiting.position === undefined ? '' : ` (#${waiting.position})`}` : `${waiting.where ?? 'command'} pending`;
    lines.push(['waiting', `${where}${waiting.reason ? `: ${waiting.reason}` : ''}${waiting.message ? ` (${waiting.message})` : ''}`]);
  }
  if (view.usage) lines.push(['usage', `${view.usage.cpuPercent.toFixed(0)}% CPU, ${formatBytes(view.usage.rssBytes)} in ${view.usage.processes} process(es)`]);
  if (run.resources) lines.push(['peak memory', `${formatBytes(run.resources.peakRssBytes)} (CPU time ${run.resources.cpuSeconds}s)`]);
  if (run.artifacts) {
    lines.push(['artifacts', `${run.artifacts.count} (${formatBytes(run.artifacts.bytes)})${run.artifacts.skipped ? `, ${run.artifacts.skipped} skipped` : ''}`]);
    if (run.artifacts.error) lines.push(['artifact error', run.artifacts.error]);
  }
  for (const [i, line] of deliveryLines(deliveries).entries()) lines.push([i === 0 ? 'notified' : '', redactSecrets(line)]);
  lines.push(['run dir', runDir]);
  const width = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${paint(style, 'gray', k.padEnd(width))}  ${v}`).join('\n');
}
