import { accessSync, constants as fsConstants, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, QwexError } from '../../errors.js';
import { installPath } from '../../install-paths.js';
import { RunFiles } from '../../paths.js';
import { isProcessAlive } from '../../process/info.js';

/**
 * The shim: the tiny parent process of every local run's command
 * (libexec/qwex-shim.c, compiled at install; libexec/qwex-shim.pl where no C
 * compiler was found). Its contract is written at the top of qwex-shim.c.
 * This module finds it, builds its command line and reads the files it
 * writes; it starts nothing.
 */

/** Written by the shim, exclusively, before the command can run: who runs it. */
export const SHIM_FILE = 'shim.json';

/** How long a torn shim.json may be in the middle of being written. */
export const TORN_SHIM_FILE_GRACE_MS = 5000;

/** The shim's own exit statuses (0: the run ended and exit.json, or the fallback, says how). */
export const ShimExitStatus = {
  /** A bad command line; fd 3 got "failed 22". */
  usage: 2,
  /** Another shim already started this run (shim.json existed): nothing ran. */
  exists: 3,
  /** shim.json could not be written (disk full...), or no process could be made: nothing ran. */
  failed: 4,
} as const;

export type ShimKind = 'c' | 'perl';

export interface ShimProgram {
  kind: ShimKind;
  /** The compiled shim, or the Perl script. */
  path: string;
  /** The perl that runs the script (kind 'perl' only). */
  perl?: string;
}

/**
 * The shim to start runs with: the compiled one if it was built and is
 * executable, else the Perl script with a perl ($QWEX_PERL, /usr/bin/perl,
 * the first on PATH), else null (the command can only be started directly).
 * QWEX_SHIM=c|perl|none forces a kind; a forced kind that is missing is an
 * error, not a silent fallback.
 */
export function findShim(env: NodeJS.ProcessEnv = process.env): ShimProgram | null {
  const forced = env.QWEX_SHIM;
  if (forced !== undefined && forced !== '' && forced !== 'c' && forced !== 'perl' && forced !== 'none') {
    throw new QwexError(ErrorCode.ConfigInvalid, `QWEX_SHIM must be c, perl or none, not "${forced}"`);
  }
  if (forced === 'none') return null;
  if (forced !== 'perl') {
    const binary = installPath('libexec', 'qwex-shim');
    if (isExecutable(binary)) return { kind: 'c', path: binary };
    if (forced === 'c') {
      throw new QwexError(ErrorCode.BackendUnavailable, `QWEX_SHIM=c but ${binary} is not built`, {
        hint: 'run `npm run build` with a C compiler installed (cc, or $CC)',
      });
    }
  }
  const script = installPath('libexec', 'qwex-shim.pl');
  const perl = findPerl(env);
  if (perl !== null && existsSync(script)) return { kind: 'perl', path: script, perl };
  if (forced === 'perl') {
    throw new QwexError(ErrorCode.BackendUnavailable, perl === null ? 'QWEX_SHIM=perl but no perl was found' : `QWEX_SHIM=perl but ${script} is missing`, {
      hint: 'install perl, or set QWEX_PERL to its path',
    });
  }
  return null;
}

/** $QWEX_PERL (none: no perl), /usr/bin/perl, or the first perl on PATH. */
function findPerl(env: NodeJS.ProcessEnv): string | null {
  const configured = env.QWEX_PERL;
  if (configured === 'none') return null;
  const candidates = configured ? [configured] : ['/usr/bin/perl', ...(env.PATH ?? '').split(':').filter(Boolean).map((dir) => join(dir, 'perl'))];
  return candidates.find(isExecutable) ?? null;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false; // not there or not executable: the next candidate
  }
}

export interface ShimOptions {
  /** The run directory: shim.json and exit.json go there. It must exist. */
  runDir: string;
  /** Where exit.json goes when the run directory cannot take it (another filesystem: the runtime dir). */
  exitFallback?: string;
  /** How long leftover processes get between SIGTERM and SIGKILL once the command ended (default 2000). */
  graceMs?: number;
  /** Put before the word of its report line on fd 3 (the spawner's shims share one pipe). */
  reportTag?: string;
}

/** The program and arguments that start `file args...` under the shim. */
export function shimArgs(shim: ShimProgram, options: ShimOptions, file: string, args: readonly string[]): { file: string; args: string[] } {
  const shimOptions = ['--run-dir', options.runDir];
  if (options.exitFallback !== undefined) shimOptions.push('--exit-fallback', options.exitFallback);
  if (options.graceMs !== undefined) {
    if (!Number.isInteger(options.graceMs) || options.graceMs < 0 || options.graceMs > 86_400_000) {
      throw new QwexError(ErrorCode.Internal, `shim grace period must be a whole number of milliseconds from 0 to 86400000, not ${options.graceMs}`);
    }
    shimOptions.push('--grace-ms', String(options.graceMs));
  }
  if (options.reportTag !== undefined) shimOptions.push('--report-tag', options.reportTag);
  const tail = [...shimOptions, '--', file, ...args];
  if (shim.kind === 'c') return { file: shim.path, args: tail };
  if (shim.perl === undefined) throw new QwexError(ErrorCode.Internal, 'a Perl shim needs the path of perl');
  return { file: shim.perl, args: [shim.path, ...tail] };
}

/** The one line the shim writes on fd 3. */
export type ShimReport = { kind: 'started'; pid: number } | { kind: 'failed'; errno: number } | { kind: 'exists' };

/** Parses the shim's fd 3 line; undefined for anything else (the shim died before saying a word). */
export function parseShimReport(line: string): ShimReport | undefined {
  const text = line.trim();
  if (text === 'exists') return { kind: 'exists' };
  const match = /^(started|failed) (\d+)$/.exec(text);
  if (!match) return undefined;
  const n = Number(match[2]);
  return match[1] === 'started' ? { kind: 'started', pid: n } : { kind: 'failed', errno: n };
}

/** shim.json complete: the command may be running, or may have ended; exit.json says which. */
export interface ShimStarted {
  state: 'started';
  shimPid: number;
  /** Start-time tokens as src/process-info.ts reads them (Linux only), to tell a reused pid apart. */
  shimStartTime?: string;
  pid: number;
  pgid: number;
  startTime?: string;
}

/**
 * shim.json torn or empty. The shim releases the command only after writing
 * the whole file, so nothing ran yet: 'starting' while its shim may still be
 * writing it (younger than TORN_SHIM_FILE_GRACE_MS, or its shim alive),
 * 'nothing' once that shim is dead, for good (an empty file names no shim:
 * then its age alone decides).
 */
export interface ShimTorn {
  state: 'starting' | 'nothing';
  shimPid?: number;
}

export type ShimState = ShimStarted | ShimTorn;

/** Reads DIR/shim.json; undefined when there is none (no shim claimed the run). */
export function readShimState(dir: string, now: number = Date.now()): ShimState | undefined {
  const path = join(dir, SHIM_FILE);
  let text: string;
  let mtimeMs: number;
  try {
    text = readFileSync(path, 'utf8');
    mtimeMs = statSync(path).mtimeMs;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new QwexError(ErrorCode.RecordInvalid, `cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  const started = parseShimFile(text);
  if (started) return started;
  const shimPid = /"shimPid":(\d+)/.exec(text)?.[1];
  const shimStartTime = /"shimStartTime":"(\d+)"/.exec(text)?.[1];
  const pid = shimPid === undefined ? undefined : Number(shimPid);
  const shimAlive = pid !== undefined && isProcessAlive(pid, shimStartTime);
  const state = now - mtimeMs > TORN_SHIM_FILE_GRACE_MS && !shimAlive ? 'nothing' : 'starting';
  return pid === undefined ? { state } : { state, shimPid: pid };
}

function parseShimFile(text: string): ShimStarted | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (!isPid(v.shimPid) || !isPid(v.pid) || !isPid(v.pgid)) return undefined;
  if (!isOptionalToken(v.shimStartTime) || !isOptionalToken(v.startTime)) return undefined;
  return {
    state: 'started',
    shimPid: v.shimPid,
    ...(v.shimStartTime === undefined ? {} : { shimStartTime: v.shimStartTime }),
    pid: v.pid,
    pgid: v.pgid,
    ...(v.startTime === undefined ? {} : { startTime: v.startTime }),
  };
}

function isPid(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) > 0;
}

function isOptionalToken(value: unknown): value is string | undefined {
  return value === undefined || (typeof value === 'string' && value !== '');
}

/** How the command ended, as the shim wrote it. Numbers are this machine's (signal 15 is SIGTERM here). */
export interface ShimExit {
  /** Its exit code; 127 (not found) or 126 (any other exec failure) when it could not be executed. */
  exitCode: number | null;
  /** The signal that ended it. */
  signal: number | null;
  /** Why exec failed (ENOENT, EACCES...); null when the command ran. */
  errno: number | null;
  /** How many processes of its tree the shim had to stop after it ended (0 from shims older than this field). */
  leftovers: number;
}

/**
 * Reads an exit file (DIR/exit.json or the fallback path): undefined while
 * there is none. The shim writes it atomically, so a file that does not
 * parse was damaged after the fact, and that is an error.
 */
export function readExitFile(path: string): ShimExit | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new QwexError(ErrorCode.RecordInvalid, `cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new QwexError(ErrorCode.RecordInvalid, `${path} is not JSON: ${JSON.stringify(text.slice(0, 80))}`, { cause: error });
  }
  const v = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  const leftovers = v.leftovers === undefined ? 0 : v.leftovers;
  if (!isIntOrNull(v.exitCode) || !isIntOrNull(v.signal) || !isIntOrNull(v.errno) || !Number.isInteger(leftovers) || (leftovers as number) < 0) {
    throw new QwexError(ErrorCode.RecordInvalid, `${path} is not a shim exit status: ${JSON.stringify(text.slice(0, 120))}`);
  }
  return { exitCode: v.exitCode, signal: v.signal, errno: v.errno, leftovers: leftovers as number };
}

function isIntOrNull(value: unknown): value is number | null {
  return value === null || Number.isInteger(value);
}

/** The exit file the shim writes in a run directory. */
export function exitFilePath(dir: string): string {
  return join(dir, RunFiles.exit);
}
