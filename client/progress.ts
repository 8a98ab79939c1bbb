import { createProgress, readRunProgress, type Progress, type ProgressState } from '../src/progress.js';
import { formatBytes, formatDuration } from './render.js';
import { styleFor, paint, type Style } from './style.js';

/**
 * The one progress renderer of the CLI: a single line on stderr, redrawn in
 * place, for the step under way: the CLI's own (the workspace snapshot, an
 * upload) or a run's supervisor's, read from the run directory's
 * progress.json. It is drawn on a terminal only, never under --quiet or
 * --json, and cleared before any other output is written, so that a run's
 * own output never lands on it.
 *
 * Hand-written rather than a progress library (cli-progress, ora): the
 * state comes from another process's file with its rate already measured,
 * and the line must give way to the run's output at any moment; what is
 * left (formatting one line, `\r` and erase-line) is a few lines here.
 */
/** A step over within this long shows nothing (no flicker for a small workspace); QWEX_PROGRESS_DELAY_MS sets it. */
const DEFAULT_SHOW_AFTER_MS = 300;
/** How often the line is redrawn, and progress.json read. */
const REDRAW_MS = 150;
/** In-process steps are passed on at most this often. */
const THROTTLE_MS = 100;

export class ProgressLine {
  private state: ProgressState | undefined;
  private drawn: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sources = new Set<() => void>();
  private readonly showAfterMs: number;
  private readonly style: Style;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {
    const delay = Number(process.env.QWEX_PROGRESS_DELAY_MS);
    this.showAfterMs = Number.isFinite(delay) && delay >= 0 ? delay : DEFAULT_SHOW_AFTER_MS;
    this.style = styleFor(stream);
  }

  /** A Progress drawn on this line: for work the CLI does itself. */
  progress(): Progress {
    return createProgress((state) => this.update(state), { throttleMs: THROTTLE_MS });
  }

  /** Shows what a run's supervisor reports in `runDir()` (read again each time: a retry moves to another run) until the returned stop. */
  follow(runDir: () => string): () => void {
    const poll = (): void => this.update(readRunProgress(runDir()));
    this.sources.add(poll);
    poll();
    return () => {
      this.sources.delete(poll);
      this.update(undefined);
    };
  }

  update(state: ProgressState | undefined): void {
    this.state = state;
    this.render();
    if (state !== undefined || this.sources.size > 0) this.timer ??= setInterval(() => this.tick(), REDRAW_MS).unref();
    else this.stopTimer();
  }

  /** Wraps a writer: the line is cleared before each write (and drawn again at the next redraw). */
  guard<C>(write: (chunk: C) => Promise<void>): (chunk: C) => Promise<void> {
    return (chunk) => {
      this.clear();
      return write(chunk);
    };
  }

  /** Erases the line if it is drawn: call before writing anything else to the terminal. */
  clear(): void {
    if (this.drawn === undefined) return;
    this.stream.write('\r\u001b[K');
    this.drawn = undefined;
  }

  close(): void {
    this.sources.clear();
    this.state = undefined;
    this.stopTimer();
    this.clear();
  }

  private tick(): void {
    for (const poll of this.sources) poll();
    this.render();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private render(): void {
    const state = this.state;
    if (state === undefined || Date.now() - Date.parse(state.startedAt) < this.showAfterMs) {
      this.clear();
      return;
    }
    const width = (this.stream.columns || 80) - 1; // the last column would wrap on some terminals
    const text = formatProgress(state, width, this.style);
    if (text === this.drawn) return;
    this.stream.write(`\r${text}\u001b[K`);
    this.drawn = text;
  }
}

const BAR_CELLS = 20;

/** "sending the workspace to gpu-box ━━━━━━━━──── 62% 50.0 MB / 80.0 MB · 3.2 MB/s · 9s left", cut to `width`. */
export function formatProgress(state: ProgressState, width: number, style: Style = { tty: false, color: false }): string {
  const amount = (n: number): string => (state.unit === 'bytes' ? formatBytes(Math.round(n)) : `${Math.round(n)} ${state.unit}`);
  const parts: string[] = [state.label];
  if (state.total !== undefined && state.total > 0) {
    const ratio = Math.min(1, state.done / state.total);
    const full = Math.floor(ratio * BAR_CELLS);
    parts.push(`${paint(style, 'cyan', '━'.repeat(full))}${paint(style, 'gray', '─'.repeat(BAR_CELLS - full))} ${Math.floor(ratio * 100)}%`);
    parts.push(`${amount(state.done)} / ${amount(state.total)}`);
  } else {
    parts.push(amount(state.done));
  }
  const facts = [
    ...(state.detail ? [state.detail] : []),
    ...(state.rate !== undefined ? [`${state.unit === 'bytes' ? formatBytes(Math.round(state.rate)) : Math.round(state.rate)}/s`] : []),
    ...(state.etaSeconds !== undefined ? [`${formatDuration(state.etaSeconds * 1000)} left`] : []),
  ];
  const text = `${parts.join(' ')}${facts.length > 0 ? ` · ${facts.join(' · ')}` : ''}`;
  return cut(text, width);
}

/** Cut to `width` visible characters, colour codes kept whole (and reset when cut). */
function cut(text: string, width: number): string {
  let seen = 0;
  let out = '';
  for (const token of text.match(/\u001b\[[0-9;]*m|[\s\S]/gu) ?? []) {
    if (token.startsWith('\u001b')) {
      out += token;
      continue;
    }
    if (seen >= width) return text.includes('\u001b[') ? `${out}\u001b[0m` : out;
    out += token;
    seen++;
  }
  return out;
}
