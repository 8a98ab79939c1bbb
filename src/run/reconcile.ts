import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findBackend } from '../backends/registry.js';
import { ErrorCode, QwexError, errnoCode, isNoSpace } from '../errors.js';
import { claim, isHolderAlive, readClaim, self, takeOver } from './claim.js';
import { endUnstarted, finishRun } from './finish.js';
import { isTerminal, type Run, type RunError } from './model.js';
import type { RecordWriter } from './record.js';
import { readStopRequest, writeStopRequest } from './stop.js';

/** How long a direct-mode run may wait for its monitor to claim it before another is launched. */
export const MONITOR_START_TIMEOUT_MS = 30_000;
/** Between two hand-overs of the same orphaned run (a monitor being launched needs a moment to claim it). */
const HANDOVER_INTERVAL_MS = 15_000;
const HANDOVER_MARK = 'handover.json';

/** What a process that looks at runs does with one that nobody supervises: hand it to a supervisor. */
export type OrphanHandler = (dir: string, run: Run) => void;

/**
 * Brings a record up to date for a process that does not supervise the run
 * (a `qwex ps`, `wait` or `status`, or qwexd looking at a direct-mode run).
 * Cheap while the run's supervisor lives (a file read and a signal 0). When
 * it died: a command that has ended is recorded here and now; otherwise the
 * run is handed to a new supervisor (`orphaned`), which starts it exactly
 * once or adopts what the dead one started.
 */
export async function reconcile(writer: RecordWriter, dir: string, orphaned: OrphanHandler): Promise<Run> {
  const run = writer.store.read(dir);
  if (isTerminal(run.status)) return run;
  const holder = readClaim(dir);
  if (holder !== undefined && isHolderAlive(holder)) return run;
  if (holder === undefined && run.status === 'pending') {
    if (run.supervisor === 'qwexd') return run; // queued: qwexd starts it when its turn comes
    if (Date.now() - Date.parse(run.createdAt) < MONITOR_START_TIMEOUT_MS) return run; // its monitor is starting
  }
  try {
    if (holder?.intent === 'cancel') {
      // A cancel of a run nobody had started died before recording it: finish its work.
      if (!takeOver(dir, self('cancel'))) return writer.store.read(dir);
      return await endUnstarted(writer, writer.store.read(dir), dir, 'cancelled', {});
    }
    const ended = await endedMeanwhile(writer, dir, run);
    if (ended) return ended;
  } catch (error) {
    // A full disk: the claim could not be taken (nothing was changed). A look at a run is not the place to fail; the
    // supervisor it is handed to records the end once there is room, and the record stays as it was until then.
    if (!isNoSpace(error)) throw error;
  }
  handOver(dir, run, orphaned);
  return run;
}

/** When the run's command has ended while nobody supervised it, records the end here (taking the claim). */
async function endedMeanwhile(writer: RecordWriter, dir: string, run: Run): Promise<Run | undefined> {
  if (run.status !== 'running') return undefined; // a pending run is resumed by its next supervisor, which may find it started
  const descriptor = findBackend(run.job.backend);
  if (!descriptor) return undefined;
  const backend = await descriptor.load();
  const probe = backend.adopt(run.backend, dir);
  try {
    const exit = await probe.state();
    if (exit === undefined) return undefined;
    if (!takeOver(dir, self('supervise'))) return writer.store.read(dir);
    const fresh = writer.store.read(dir);
    if (isTerminal(fresh.status)) return fresh;
    return await finishRun(writer, fresh, dir, exit, probe, { stopReason: readStopRequest(dir)?.reason });
  } finally {
    probe.dispose();
  }
}

/** Calls `orphaned` at most once per HANDOVER_INTERVAL_MS per run: every look at it should not launch a supervisor. */
function handOver(dir: string, run: Run, orphaned: OrphanHandler): void {
  const mark = join(dir, HANDOVER_MARK);
  try {
    if (Date.now() - statSync(mark).mtimeMs < HANDOVER_INTERVAL_MS) return;
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error;
  }
  try {
    writeFileSync(mark, JSON.stringify({ pid: process.pid, at: new Date().toISOString() }), { mode: 0o600 });
  } catch {
    // A full disk: hand over all the same; a second supervisor finds the claim taken and leaves.
  }
  orphaned(dir, run);
}

/**
 * Asks for a run to be stopped, from any process. The request is written
 * first, so that whoever supervises the run (now or next) acts on it: a run
 * nobody claimed is recorded as cancelled here (it never starts); a live
 * supervisor is told (SIGUSR1); a dead one's run is handed over. Returns the
 * record as it is then; the final status is written by the supervisor.
 */
export async function requestCancel(writer: RecordWriter, dir: string, graceMs: number | undefined, orphaned: OrphanHandler, reason?: RunError): Promise<Run> {
  const run = writer.store.read(dir);
  if (isTerminal(run.status)) throw new QwexError(ErrorCode.RunNotActive, `run ${run.id} already ended (${run.status})`);
  writeStopRequest(dir, { reason: 'cancel', graceMs: graceMs ?? run.job.killGraceMs });
  if (claim(dir, self('cancel'))) {
    // Nobody started it, and now nobody will.
    return endUnstarted(writer, run, dir, 'cancelled', reason ? { error: reason } : {});
  }
  const holder = readClaim(dir);
  if (holder !== undefined && isHolderAlive(holder)) {
    if (holder.intent === 'supervise' && holder.pid !== process.pid) process.kill(holder.pid, 'SIGUSR1');
    return writer.store.read(dir);
  }
  return reconcile(writer, dir, orphaned);
}
