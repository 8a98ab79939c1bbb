import { shortId } from '../src/ids.js';
import { exitCodeOf, isTerminal, type Run } from '../src/run/model.js';
import { runDir } from '../src/paths.js';
import type { RunRef, RunService } from '../src/service/index.js';
import { willRetry } from '../src/workflow/retry.js';
import { followOutput } from './context.js';
import { ProgressLine } from './progress.js';
import { startLine, styleFor, summaryLine } from './render.js';

/**
 * Streams a run's output to its end and returns its exit code; a run that
 * will be retried is followed into its next attempt. Ctrl-C cancels the run
 * (it is still recorded); a second Ctrl-C stops waiting.
 */
export async function foreground(service: RunService, project: string, submitted: Run, options: { quiet: boolean; progress?: boolean }): Promise<number> {
  const errStyle = styleFor(process.stderr);
  // What the run's supervisor reports while the run is pending or ending (a sync, a pull, collecting artifacts).
  const progress = options.progress ? new ProgressLine() : undefined;
  const say = (line: string): void => {
    progress?.clear();
    if (!options.quiet) process.stderr.write(`${line}\n`);
  };
  let ref: RunRef = { id: submitted.id, dir: runDir(project, submitted.id) };
  say(startLine(errStyle, submitted, service.via === 'qwexd' ? 'qwexd' : undefined));
  progress?.follow(() => ref.dir);
  const output = followOutput();
  const toStdout = progress ? progress.guard(output.onStdout) : output.onStdout;
  const toStderr = progress ? progress.guard(output.onStderr) : output.onStderr;

  const detach = new AbortController();
  let interrupts = 0;
  const onInterrupt = (): void => {
    interrupts++;
    if (interrupts === 1) {
      say('cancelling (Ctrl-C again to stop waiting)');
      service.cancel(ref).catch(() => {
        // It ended meanwhile: the follow below reports how.
      });
    } else {
      detach.abort();
    }
  };
  process.on('SIGINT', onInterrupt);
  try {
    for (;;) {
      const final = await service.follow(ref, { ...output, onStdout: toStdout, onStderr: toStderr, signal: detach.signal });
      if (detach.signal.aborted && !isTerminal(final.status)) {
        say(`stopped waiting; run ${final.id} is ${final.status}`);
        return 130;
      }
      say(summaryLine(errStyle, final));
      if (!willRetry(final) || interrupts > 0) return exitCodeOf(final);
      const next = await nextAttempt(service, ref, detach.signal);
      if (next === undefined) return exitCodeOf(final);
      ref = { id: next, dir: runDir(project, next) };
      say(`retrying: attempt ${(final.job.attempt?.number ?? 1) + 1} of ${final.job.retry!.limit + 1} is run ${shortId(next)}`);
      if (interrupts > 0) {
        await service.cancel(ref).catch(() => {});
        return 130;
      }
    }
  } finally {
    process.off('SIGINT', onInterrupt);
    progress?.close();
  }
}

const ATTEMPT_POLL_MS = 200;

/** The attempt qwexd creates after a failed run, once it is there (undefined when waiting is aborted). */
async function nextAttempt(service: RunService, ref: RunRef, signal: AbortSignal): Promise<string | undefined> {
  while (!signal.aborted) {
    const view = await service.get(ref);
    if (view.nextAttempt !== undefined) return view.nextAttempt;
    await new Promise((resolve) => setTimeout(resolve, ATTEMPT_POLL_MS));
  }
  return undefined;
}
