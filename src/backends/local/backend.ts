import { ErrorCode } from '../../errors.js';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { once } from 'node:events';
import { constants } from 'node:os';
import { join } from 'node:path';
import { executable } from '../../config/command.js';
import { installPath } from '../../install-paths.js';
import { RunFiles } from '../../paths.js';
import { isGroupAlive, isProcessAlive, processStartTime, signalGroup } from '../../process/info.js';
import type { Job } from '../../run/model.js';
import { notStartedProcess, type Backend, type ExitInfo, type RunIO, type StartedProcess } from '../types.js';

/** How often a run whose shim we did not start is checked for a shim that died without a word. */
const ADOPTED_CHECK_MS = 1000;

/**
 * Runs the command on this machine as the leader of its own process group,
 * with stdout and stderr opened straight onto the log files: output never
 * passes through a qwex process, so nothing is lost if qwex goes away.
 *
 * The command's parent is libexec/qwex-shim.pl, a few-MB Perl process in its
 * own session that waits for it and writes its exact exit status to
 * `exit.json`. So whoever started the run (a monitor, qwexd) can die and a
 * later process can `adopt` the run and still learn how it ended. Where no
 * perl is installed, the command is started directly (and a run whose
 * starter dies becomes lost).
 */
export class LocalBackend implements Backend {
  readonly name = 'local';
  readonly outputNeedsSupervisor = false;

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const perl = findPerl();
    const { file, args } = executable(job);
    const stdoutFd = openSync(io.stdoutPath, 'a', 0o600);
    let stderrFd: number;
    try {
      stderrFd = openSync(io.stderrPath, 'a', 0o600);
    } catch (error) {
      closeSync(stdoutFd);
      throw error;
    }
    try {
      if (!existsSync(job.cwd)) return notStarted(cwdMissing(job.cwd));
      return perl ? await startWithShim(perl, file, args, job, io, stdoutFd, stderrFd) : await startDirectly(file, args, job, io, stdoutFd, stderrFd);
    } finally {
      closeSync(stdoutFd);
      closeSync(stderrFd);
    }
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    const pgid = typeof details.pgid === 'number' ? details.pgid : undefined;
    const shim = typeof details.shimPid === 'number' ? { pid: details.shimPid, startTime: details.shimStartTime as string | undefined } : undefined;
    return watched(details, new ExitWatcher(dir, shim, pgid), pgid);
  }
}

/** A run whose end is learnt from its exit file. `onDispose` lets go of whatever else the starter holds. */
function watched(details: Record<string, unknown>, watcher: ExitWatcher, pgid: number | undefined, onDispose: () => void = () => {}): StartedProcess {
  return {
    spawned: true,
    details,
    ...(pgid === undefined ? {} : { localProcessGroup: pgid }),
    exited: watcher.exited,
    state: () => Promise.resolve(watcher.result),
    release: () => Promise.resolve(),
    signal: (sig) => {
      if (pgid !== undefined) signalGroup(pgid, sig);
    },
    dispose: () => {
      watcher.dispose();
      onDispose();
    },
  };
}

async function startWithShim(perl: string, file: string, args: string[], job: Job, io: RunIO, stdoutFd: number, stderrFd: number): Promise<StartedProcess> {
  const shim = spawn(perl, [shimScript(), join(io.dir, RunFiles.exit), file, ...args], {
    cwd: job.cwd,
    env: io.env,
    detached: true, // its own session: it outlives its starter, a closed terminal, Ctrl-C
    stdio: ['ignore', stdoutFd, stderrFd, 'pipe'],
  });
  const shimExited = once(shim, 'exit').then(
    () => undefined,
    () => undefined,
  );
  const line = await firstLine(shim.stdio[3] as NodeJS.ReadableStream | null, shimExited);
  const started = /^started (\d+)$/.exec(line);
  if (!started || shim.pid === undefined) {
    // Could not exec: the shim wrote the exit file with errno before saying so.
    await shimExited;
    return notStarted(readExitFile(io.dir, file) ?? { exitCode: 126, signal: null, error: { code: ErrorCode.CommandFailedToStart, message: `cannot start ${file}` } });
  }
  const pid = Number(started[1]);
  const details = {
    pid,
    pgid: pid,
    startTime: processStartTime(pid),
    shimPid: shim.pid,
    shimStartTime: processStartTime(shim.pid),
  };
  const watcher = new ExitWatcher(io.dir, { pid: shim.pid, startTime: details.shimStartTime }, pid, file);
  void shimExited.then(() => watcher.check());
  // Whoever stops watching must be able to exit while the run goes on.
  return watched(details, watcher, pid, () => shim.unref());
}

/** Without perl: the command is our own child; nobody else can learn its exit status. */
async function startDirectly(file: string, args: string[], job: Job, io: RunIO, stdoutFd: number, stderrFd: number): Promise<StartedProcess> {
  // Loaded only here: qwexd and monitors with perl never need it, and it is the largest module qwex loads.
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
    settledInfo = { exitCode: null, signal: null };
    if (r.exitCode !== undefined) return (settledInfo = { exitCode: r.exitCode, signal: null });
    if (r.signal !== undefined) return (settledInfo = { exitCode: null, signal: r.signal });
    return (settledInfo = spawnFailure(r.code === 'ENOENT' ? 2 : r.code === 'EACCES' ? 13 : undefined, file));
  });
  const spawned = await Promise.race([once(subprocess, 'spawn').then(() => true, () => false), result.then(() => false)]);
  const pid = subprocess.pid;
  if (!spawned || pid === undefined) return notStarted(await result);
  return {
    spawned: true,
    details: { pid, pgid: pid, startTime: processStartTime(pid) },
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

/**
 * Waits for the shim's exit file. Wakes on fs.watch events, on the shim's
 * exit (when we started it), and every second to notice a shim that was
 * killed: then the run is lost once nothing of its process group is left.
 */
class ExitWatcher {
  readonly exited: Promise<ExitInfo>;
  private resolve!: (info: ExitInfo) => void;
  private fsWatcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  /** How it ended, once known. */
  result: ExitInfo | undefined;

  constructor(
    private readonly dir: string,
    private readonly shim: { pid: number; startTime: string | undefined } | undefined,
    private readonly pgid: number | undefined,
    private readonly file = 'the command',
  ) {
    this.exited = new Promise((resolve) => (this.resolve = resolve));
    try {
      this.fsWatcher = watch(dir, { persistent: false }, (_event, name) => {
        if (name === null || name === RunFiles.exit) this.check();
      });
      this.fsWatcher.on('error', () => {});
    } catch {
      // the timer below still notices
    }
    // Not unref'd: a process waiting for a run (a monitor) must stay alive until it ends or dispose() is called.
    this.timer = setInterval(() => this.check(), ADOPTED_CHECK_MS);
    this.check();
  }

  check(): void {
    if (this.done) return;
    const info = readExitFile(this.dir, this.file);
    if (info) return this.finish(info);
    if (this.shim && isProcessAlive(this.shim.pid, this.shim.startTime)) return;
    // The shim is gone without an exit file (killed), or there never was one.
    if (this.pgid !== undefined && isGroupAlive(this.pgid)) return; // still running, though nobody can learn how it ends
    const late = readExitFile(this.dir, this.file); // it may have written the file just before exiting
    this.finish(late ?? {
      exitCode: null,
      signal: null,
      lost: this.shim ? `its shim (pid ${this.shim.pid}) was killed before the command ended` : 'it was started without a shim, by a process that is gone',
    });
  }

  dispose(): void {
    this.done = true;
    this.fsWatcher?.close();
    if (this.timer) clearInterval(this.timer);
  }

  private finish(info: ExitInfo): void {
    this.dispose();
    this.result = info;
    this.resolve(info);
  }
}

const SIGNAL_NAMES: Record<number, string> = Object.fromEntries(Object.entries(constants.signals).map(([name, n]) => [n, name]));

function readExitFile(dir: string, file: string): ExitInfo | undefined {
  const path = join(dir, RunFiles.exit);
  let text: string;
  let endedAt: Date;
  try {
    text = readFileSync(path, 'utf8');
    endedAt = statSync(path).mtime;
  } catch {
    return undefined;
  }
  let parsed: { exitCode: number | null; signal: number | null; errno: number | null };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    return undefined;
  }
  if (parsed.errno !== null) return { ...spawnFailure(parsed.errno, file), endedAt };
  if (parsed.signal !== null) return { exitCode: null, signal: SIGNAL_NAMES[parsed.signal] ?? `SIG${parsed.signal}`, endedAt };
  return { exitCode: parsed.exitCode, signal: null, endedAt };
}

function notStarted(info: ExitInfo): StartedProcess {
  return notStartedProcess(info);
}

function cwdMissing(cwd: string): ExitInfo {
  return { exitCode: 127, signal: null, error: { code: ErrorCode.CwdNotFound, message: `working directory does not exist: ${cwd}` } };
}

function spawnFailure(errno: number | undefined, file: string): ExitInfo {
  if (errno === constants.errno.ENOENT) {
    return { exitCode: 127, signal: null, error: { code: ErrorCode.CommandNotFound, message: `command not found: ${file}` } };
  }
  if (errno === constants.errno.EACCES) {
    return { exitCode: 126, signal: null, error: { code: ErrorCode.CommandNotExecutable, message: `permission denied: ${file}` } };
  }
  return { exitCode: 126, signal: null, error: { code: ErrorCode.CommandFailedToStart, message: `cannot execute ${file} (errno ${errno ?? 'unknown'})` } };
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

let perlPath: string | null | undefined;

/** The perl the shim runs with: $QWEX_PERL, /usr/bin/perl, or the first perl on PATH; null if none (or QWEX_PERL=none). */
export function findPerl(): string | null {
  if (perlPath !== undefined) return perlPath;
  const configured = process.env.QWEX_PERL;
  if (configured === 'none') return (perlPath = null);
  const candidates = configured ? [configured] : ['/usr/bin/perl', ...(process.env.PATH ?? '').split(':').filter(Boolean).map((d) => join(d, 'perl'))];
  perlPath = candidates.find((p) => existsSync(p)) ?? null;
  return perlPath;
}

function shimScript(): string {
  const path = installPath('libexec', 'qwex-shim.pl');
  if (existsSync(path)) return path;
  throw new Error(`${path} is missing from this installation`);
}
