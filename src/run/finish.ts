import { join } from 'node:path';
import { captureArtifacts, summarize, type ArtifactManifest } from '../workspace/artifacts.js';
import type { ExitInfo, StartedProcess } from '../backends/types.js';
import { ErrorCode } from '../errors.js';
import { writeJsonAtomic } from '../fs-atomic.js';
import { RunFiles } from '../paths.js';
import type { Progress } from '../progress.js';
import { transition, type EndReason, type Run, type RunStatus } from './model.js';
import { execCwd, execRoot, readBaseline, removeRunCopy, type RecordWriter } from './record.js';
import type { StopRequest } from './stop.js';

export interface FinishContext {
  stopReason: StopRequest['reason'] | undefined;
  resources?: Run['resources'];
  /** True once the supervisor stops (qwexd shutting down): a final save that cannot be written is not retried forever. */
  isDisposed?: () => boolean;
  /** The backend started the run but its command never got to run (a Job cancelled in its queue): no start, no exit. */
  neverRan?: boolean;
  /** Where collecting the artifacts from elsewhere reports how far it is. */
  progress?: Progress;
}

/**
 * Records the end of a run whose command has ended: captures (or collects)
 * its artifacts, writes the final record, and only then removes what served
 * the run (its container, its copy of the workspace).
 */
export async function finishRun(writer: RecordWriter, run: Run, dir: string, exit: ExitInfo, started: StartedProcess, context: FinishContext): Promise<Run> {
  const finishedAt = (exit.endedAt ?? new Date()).toISOString();
  // A run that ended before anyone saw it run (a supervisor died while it started) ran all the same.
  const neverRan = context.neverRan === true && run.status === 'pending';
  const ran = run.status === 'pending' && exit.lost === undefined && started.spawned && !neverRan ? transition(run, 'running', { startedAt: run.startedAt ?? started.startedAt?.toISOString() ?? finishedAt }) : run;
  let final: Run;
  if (neverRan && exit.lost === undefined) {
    const [status] = outcome(exit, context.stopReason);
    // Stopped before it ran: no exit code, no signal of its own. It could not run (not found): the shell's 127/126.
    const stopped = context.stopReason !== undefined;
    final = transition(ran, status === 'succeeded' ? 'failed' : status, {
      finishedAt,
      endReason: context.stopReason === 'timeout' ? 'timeout' : status === 'cancelled' ? 'cancel' : 'error',
      exitCode: stopped ? null : exit.exitCode,
      signal: stopped ? null : exit.signal,
      ...(exit.error ? { error: exit.error } : {}),
    });
  } else if (exit.lost !== undefined) {
    final = transition(ran, 'lost', { finishedAt, endReason: 'lost', error: { code: ErrorCode.RunLost, message: `run ${run.id} is lost: ${exit.lost}` } });
  } else {
    const manifest = await artifactsOf(ran, dir, started, context.progress);
    const [status, endReason] = outcome(exit, context.stopReason);
    final = transition(ran, status, {
      finishedAt,
      endReason,
      exitCode: exit.exitCode,
      signal: exit.signal,
      artifacts: summarize(manifest),
      ...(context.resources ? { resources: context.resources } : {}),
      ...(exit.leftovers ? { leftovers: exit.leftovers } : {}),
      ...(exit.error ? { error: exit.error } : {}),
      ...(endReason === 'timeout' ? { error: { code: ErrorCode.Timeout, message: `stopped after the ${run.job.timeoutMs} ms timeout` } } : {}),
    });
  }
  final = await writer.saveFinal(final, dir, context.isDisposed);
  // Only now that the outcome is recorded: what served the run goes.
  await started.release();
  await removeRunCopy(dir);
  return final;
}

/** Records a run that never ran (it could not start, or was cancelled first). */
export async function endUnstarted(writer: RecordWriter, run: Run, dir: string, to: 'failed' | 'cancelled', patch: Partial<Run>): Promise<Run> {
  const final = await writer.saveFinal(transition(run, to, { endReason: to === 'cancelled' ? 'cancel' : 'error', ...patch }), dir);
  await removeRunCopy(dir);
  return final;
}

async function artifactsOf(run: Run, dir: string, started: StartedProcess, progress: Progress | undefined): Promise<ArtifactManifest> {
  if (started.collectArtifacts) {
    return started
      .collectArtifacts({ runId: run.id, cwd: run.job.workspace?.cwd ?? '', settings: run.job.artifacts, runDir: dir, ...(progress ? { progress } : {}) })
      .catch((error: unknown) => failedCapture(run.id, dir, error));
  }
  return captureArtifacts({
    cwd: execCwd(run, dir),
    projectRoot: execRoot(run, dir),
    settings: run.job.artifacts,
    runId: run.id,
    baseline: readBaseline(dir),
    filesDir: join(dir, RunFiles.files),
    manifestPath: join(dir, RunFiles.artifacts),
  });
}

/** The manifest recorded when artifacts could not be brought home at all (the remote went away). */
function failedCapture(runId: string, dir: string, error: unknown): ArtifactManifest {
  const manifest: ArtifactManifest = { runId, capturedAt: new Date().toISOString(), files: [], skipped: [], totalBytes: 0, error: `artifacts could not be collected: ${(error as Error).message}` };
  try {
    writeJsonAtomic(join(dir, RunFiles.artifacts), manifest, 'file');
  } catch {
    // The record carries the same error in its artifact summary: nothing is hidden.
  }
  return manifest;
}

export function outcome(exit: ExitInfo, stopReason: StopRequest['reason'] | undefined): [RunStatus, EndReason] {
  if (stopReason === 'cancel') return ['cancelled', 'cancel'];
  if (stopReason === 'timeout') return ['failed', 'timeout'];
  if (exit.error) return ['failed', 'error'];
  if (exit.exitCode === 0) return ['succeeded', 'exit'];
  if (exit.signal !== null) return ['failed', 'signal'];
  return ['failed', 'exit'];
}
