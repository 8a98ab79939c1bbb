import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { executable } from '../../config/command.js';
import { ErrorCode } from '../../errors.js';
import { exitFallbackPath } from '../../paths.js';
import { processStartTime, signalGroup } from '../../process/info.js';
import type { Job } from '../../run/model.js';
import { notStartedProcess, type Backend, type ExitInfo, type RunIO, type StartedProcess } from '../types.js';
import type { LocalDetails } from './index.js';
import { ExitWatcher, readExit, spawnFailure } from './exit-watcher.js';
import { SHIM_FILE, findShim, parseShimReport, readShimState, shimArgs, type ShimProgram, type ShimReport } from './shim.js';
import { sharedSpawner, type Spawner } from './spawner.js';

/** How long to wait for a shim that is writing shim.json (a predecessor's, caught mid-start). */
const STARTING_WAIT_MS = 6000;

/**
 * Runs the command on this machine as the leader of its own process group,
 * with stdout and stderr opened straight onto the log files: output never
 * passes through a qwex process, so nothing is lost if qwex goes away.
 *
 * The command's parent is the shim (libexec/qwex-shim.c, or the Perl one
 * where no compiler was found; see shim.ts), a tiny process in its own
 * session that records who runs the command in shim.json BEFORE it runs,
 * waits for it, stops whatever of its tree is left when it ends (it is the
 * tree's subreaper on Linux), and writes its exact exit status to exit.json
 * (or, on a full disk, to the fallback path in the runtime directory). So
 * whoever started the run can die at any instant and a later process learns
 * from those files whether the command started and how it ended. Without
 * any shim the command is started directly (and a run whose starter dies
 * becomes lost).
 */
export class LocalBackend implements Backend {
  readonly name = 'local';

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    // A supervisor that died may have started it already: shim.json says so.
    const earlier = await earlierStart(io.dir);
    if (earlier) return { ...adoptShim(earlier, io.dir, io.runId), ...shimWrittenAt(io.dir) };
    io.signal.throwIfAborted();
    const shim = findShim();
    const { file, args } = executable(job);
    if (!existsSync(job.cwd)) return notStartedProcess(cwdMissing(job.cwd));
    const spawner = shim?.kind === 'c' ? sharedSpawner() : undefined;
    if (shim && spawner) {
      const started = await startWithSpawner(spawner, shim, file, args, job, io);
      if (started) return started;
    }
    const stdoutFd = openSync(io.stdoutPath, 'a', 0o600);
    let stderrFd: number;
    try {
      stderrFd = openSync(io.stderrPath, 'a', 0o600);
    } catch (error) {
      closeSync(stdoutFd);
      throw error;
    }
    try {
      return shim ? await startWithShim(shim, file, args, job, io, stdoutFd, stderrFd) : await startDirectly(file, args, job, io, stdoutFd, stderrFd);
    } finally {
      closeSync(stdoutFd);
      closeSync(stderrFd);
    }
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    const d = details as LocalDetails;
    const pgid = d.pgid;
    const shim = d.shimPid === undefined ? undefined : { pid: d.shimPid, ...(d.shimStartTime === undefined ? {} : { startTime: d.shimStartTime }) };
    const runId = dir.split('/').pop() ?? '';
    return watched(details, new ExitWatcher(dir, runId, shim, pgid === undefined ? undefined : { pgid, startTime: d.startTime }));
  }
}

/** What a predecessor's shim recorded, once it is complete; undefined when no shim ran the command. */
async function earlierStart(dir: string): Promise<LocalDetails | undefined> {
  const deadline = Date.now() + STARTING_WAIT_MS;
  for (;;) {
    const state = readShimState(dir);
    if (state === undefined) return undefined;
    if (state.state === 'started') {
      const { state: _state, ...details } = state;
      return details;
    }
    if (state.state === 'nothing') {
      // Its shim died before releasing the command: nothing ran; this start may take its place.
      rmSync(join(dir, SHIM_FILE), { force: true });
      return undefined;
    }
    if (Date.now() > deadline) return undefined;
    await sleep(100);
  }
}

/** When the shim wrote shim.json, just before it released the command: when the command started. */
function shimWrittenAt(dir: string): { startedAt?: Date } {
  try {
    return { startedAt: statSync(join(dir, SHIM_FILE)).mtime };
  } catch {
    return {}; // removed meanwhile (the run directory went): the adoption's own time is recorded instead
  }
}

function adoptShim(details: LocalDetails, dir: string, runId: string): StartedProcess {
  const shim = details.shimPid === undefined ? undefined : { pid: details.shimPid, ...(details.shimStartTime === undefined ? {} : { startTime: details.shimStartTime }) };
  return watched({ ...details }, new ExitWatcher(dir, runId, shim, details.pgid === undefined ? undefined : { pgid: details.pgid, startTime: details.startTime }));
}

/** A run whose end is learnt from its exit file. `onDispose` lets go of whatever else the starter holds. */
function watched(details: Record<string, unknown>, watcher: ExitWatcher, onDispose: () => void = () => {}): StartedProcess {
  const group = watcher.group;
  return {
    spawned: true,
    details,
    ...(group === undefined ? {} : { localProcessGroup: group.pgid }),
    exited: watcher.exited,
    state: () => Promise.resolve(watcher.result),
    release: () => Promise.resolve(),
    signal: (sig) => watcher.signal(sig),
    dispose: () => {
      watcher.dispose();
      onDispose();
    },
  };
}

/** The shim's command line for this run, its exit fallback's directory made. */
function shimCommand(shim: ShimProgram, file: string, args: string[], job: Job, io: RunIO, reportTag?: string): { file: string; args: string[] } {
  const fallback = exitFallbackPath(io.runId);
  try {
    mkdirSync(dirname(fallback), { recursive: true, mode: 0o700 });
  } catch {
    // Without it the shim keeps retrying the run directory until it can write there: the status is not lost.
  }
  return shimArgs(shim, { runDir: io.dir, exitFallback: fallback, graceMs: Math.min(job.killGraceMs, 60_000), ...(reportTag ? { reportTag } : {}) }, file, args);
}

async function startWithShim(shim: ShimProgram, file: string, args: string[], job: Job, io: RunIO, stdoutFd: number, stderrFd: number): Promise<StartedProcess> {
  const command = shimCommand(shim, file, args, job, io);
  const child = spawn(command.file, command.args, {
    cwd: job.cwd,
    env: io.env,
    detached: true, // its own session: it outlives its starter, a closed terminal, Ctrl-C
    stdio: ['ignore', stdoutFd, stderrFd, 'pipe'],
  });
  const childExited = once(child, 'exit').then(
    () => undefined,
    () => undefined,
  );
  const report = parseShimReport(await firstLine(child.stdio[3] as NodeJS.ReadableStream | null, childExited));
  if (report?.kind !== 'started') await childExited; // it wrote the exit file, if any, before its last word
  return settleStart(report, child.pid, file, io, {
    watch: (watcher) => void childExited.then(() => watcher.check()),
    // Whoever stops watching must be able to exit while the run goes on.
    onDispose: () => child.unref(),
  });
}

/**
 * The shim started through the process's spawner (qwexd); undefined when
 * the spawner died before it could fork one, twice: then Node spawns it.
 */
async function startWithSpawner(spawner: Spawner, shim: ShimProgram, file: string, args: string[], job: Job, io: RunIO): Promise<StartedProcess | undefined> {
  const strings = [file, ...args, job.cwd, io.stdoutPath, io.stderrPath, ...Object.entries(io.env).flat()];
  if (strings.some((s) => s.includes('\0'))) return undefined; // Node's spawn refuses it with the error users know
  for (let attempt = 0; attempt < 2; attempt++) {
    const current = attempt === 0 ? spawner : sharedSpawner();
    if (!current) return undefined;
    const outcome = await current.start((tag) => {
      const command = shimCommand(shim, file, args, job, io, tag);
      return { file: command.file, args: command.args, builtinShim: true, cwd: job.cwd, env: io.env, stdoutPath: io.stdoutPath, stderrPath: io.stderrPath };
    });
    // No word from a spawner that died: ask again (shim.json keeps it to one start); a shim that reported is settled.
    if (outcome.spawnerDied && outcome.shimPid === undefined && outcome.report === undefined) continue;
    let stopListening = (): void => {};
    return settleStart(outcome.report, outcome.shimPid, file, io, {
      watch: (watcher) => {
        if (outcome.shimPid !== undefined) stopListening = current.onReaped(outcome.shimPid, () => watcher.check());
      },
      onDispose: () => stopListening(),
    });
  }
  return undefined;
}

/** What a shim's report means for the run: its command adopted, running, or never started (and why). */
async function settleStart(
  report: ShimReport | undefined,
  shimPid: number | undefined,
  file: string,
  io: RunIO,
  hooks: { watch(watcher: ExitWatcher): void; onDispose(): void },
): Promise<StartedProcess> {
  if (report?.kind === 'exists' || report === undefined) {
    // Another shim took this run between our look and our start, or ours went silent after writing shim.json:
    // either way shim.json names the command, which is the run's.
    const earlier = await earlierStart(io.dir);
    if (earlier) return adoptShim(earlier, io.dir, io.runId);
  }
  const recorded = readShimState(io.dir);
  if (shimPid === undefined && recorded?.state === 'started') shimPid = recorded.shimPid; // its spawner died before "forked"
  if (report?.kind !== 'started' || shimPid === undefined) {
    // Could not exec (the shim wrote the exit file with errno before saying so), or the shim could not start at all.
    const exit = readExit(io.dir, io.runId, file);
    if (exit && !('lost' in exit)) return notStartedProcess(exit);
    const errno = report?.kind === 'failed' ? report.errno : undefined;
    return notStartedProcess(errno === constants.errno.ENOSPC ? { exitCode: 126, signal: null, error: { code: ErrorCode.StateUnwritable, message: `cannot start ${file}: no space left on device for the run's files` } } : spawnFailure(errno, file));
  }
  const pid = report.pid;
  const details: LocalDetails =
    recorded?.state === 'started'
      ? { pid: recorded.pid, pgid: recorded.pgid, ...opt('startTime', recorded.startTime), shimPid: recorded.shimPid, ...opt('shimStartTime', recorded.shimStartTime) }
      : { pid, pgid: pid, ...opt('startTime', processStartTime(pid)), shimPid, ...opt('shimStartTime', processStartTime(shimPid)) };
  const watcher = new ExitWatcher(io.dir, io.runId, { pid: details.shimPid!, ...opt('startTime', details.shimStartTime) }, { pgid: details.pgid!, startTime: details.startTime }, file);
  hooks.watch(watcher);
  return watched({ ...details }, watcher, hooks.onDispose);
}

/** Without any shim: the command is our own child; nobody else can learn its exit status. */
async function startDirectly(file: string, args: string[], job: Job, io: RunIO, stdoutFd: number, stderrFd: number): Promise<StartedProcess> {
  // Loaded only here: it is the largest module qwex loads, and a shim is the rule.
  const { execa } = await import('execa');
  const subprocess = execa(file, args, {
    cwd: job.cwd,
    env: io.env,
    extendEnv: false,
    stdin: 'ignore',
    // A file descriptor is handed to the child as is (execa's {file} option would pipe through us).
    // execa's types list only the literals 3..9, though any open descriptor works.
    stdout: stdoutFd as 3,
    stderr: stderrFd as 3,
    detached: true,
    cleanup: false,
    reject: false,
  });
  let settledInfo: ExitInfo | undefined;
  const result = subprocess.then((r): ExitInfo => {
    if (r.exitCode !== undefined) return (settledInfo = { exitCode: r.exitCode, signal: null });
    if (r.signal !== undefined) return (settledInfo = { exitCode: null, signal: r.signal });
    return (settledInfo = spawnFailure(r.code === 'ENOENT' ? constants.errno.ENOENT : r.code === 'EACCES' ? constants.errno.EACCES : undefined, file));
  });
  const spawned = await Promise.race([once(subprocess, 'spawn').then(() => true, () => false), result.then(() => false)]);
  const pid = subprocess.pid;
  if (!spawned || pid === undefined) return notStartedProcess(await result);
  return {
    spawned: true,
    details: { pid, pgid: pid, ...opt('startTime', processStartTime(pid)) },
    localProcessGroup: pid,
    exited: result,
    state: () => Promise.resolve(settledInfo),
    release: () => Promise.resolve(),
    signal: (sig) => {
      signalGroup(pid, sig);
    },
    dispose: () => {},
  };
}

function cwdMissing(cwd: string): ExitInfo {
  return { exitCode: 127, signal: null, error: { code: ErrorCode.CwdNotFound, message: `working directory does not exist: ${cwd}` } };
}

/** Reads the shim's one report line from fd 3; '' if it exits without one. */
async function firstLine(stream: NodeJS.ReadableStream | null, exited: Promise<void>): Promise<string> {
  if (!stream) return '';
  let text = '';
  const line = new Promise<string>((resolve) => {
    stream.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const nl = text.indexOf('\n');
      if (nl !== -1) resolve(text.slice(0, nl));
    });
    stream.on('end', () => resolve(text.trim()));
    stream.on('error', () => resolve(text.trim()));
  });
  const result = await Promise.race([line, exited.then(() => line)]);
  (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
  return result;
}

function opt<K extends string, V>(key: K, value: V | undefined): Partial<Record<K, V>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, V>);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
