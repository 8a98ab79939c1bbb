/**
 * Every failure qwex reports has a stable code. The code is what scripts,
 * the daemon protocol and the server's API rely on; the message is for
 * people and may change. This file is the one table of codes, and of the
 * exit status each maps to (`exitStatusFor`), for qwex, qwexd, qwexcloud
 * and doctor alike.
 */
export const ErrorCode = {
  /** The command line was wrong: unknown flag, missing argument, bad value. */
  Usage: 'QWEX_USAGE',
  RunNotFound: 'QWEX_RUN_NOT_FOUND',
  RunAmbiguous: 'QWEX_RUN_AMBIGUOUS',
  ConfigInvalid: 'QWEX_CONFIG_INVALID',
  /** A file or directory qwex must write (the project's .qwex/, the state dir) cannot be written. */
  StateUnwritable: 'QWEX_STATE_UNWRITABLE',
  /** A run record on disk is missing, torn or of an unknown shape. */
  RecordInvalid: 'QWEX_RECORD_INVALID',
  IndexError: 'QWEX_INDEX_ERROR',
  BackendUnavailable: 'QWEX_BACKEND_UNAVAILABLE',
  /** An illegal run-state transition was attempted: a bug, or a race lost to another writer. */
  InvalidTransition: 'QWEX_INVALID_TRANSITION',
  RunNotActive: 'QWEX_RUN_NOT_ACTIVE',
  /** qwexd could not be reached, or closed the connection. */
  DaemonUnavailable: 'QWEX_DAEMON_UNAVAILABLE',
  /** qwexd and this client speak different protocol versions. */
  ProtocolMismatch: 'QWEX_PROTOCOL_MISMATCH',
  DaemonAlreadyRunning: 'QWEX_DAEMON_ALREADY_RUNNING',
  SocketPathTooLong: 'QWEX_SOCKET_PATH_TOO_LONG',
  /** systemctl or launchctl refused to enable or disable the qwexd service. */
  ServiceManager: 'QWEX_SERVICE_MANAGER',
  /** The image is not on the engine and the pull policy forbids pulling it. */
  ImageNotFound: 'QWEX_IMAGE_NOT_FOUND',
  ImagePullFailed: 'QWEX_IMAGE_PULL_FAILED',
  /** The engine refused to create or start the run's container (bad mount, network, GPU request...). */
  ContainerFailed: 'QWEX_CONTAINER_FAILED',
  /** `qwex doctor` found something wrong (an unreadable record): it says what. */
  DoctorFindings: 'QWEX_DOCTOR_FINDINGS',
  /** qwexcloud: no token, or one that is unknown or revoked. */
  Unauthorized: 'QWEX_UNAUTHORIZED',
  /** qwexcloud: the token is valid but may not do this (an admin-only action). */
  Forbidden: 'QWEX_FORBIDDEN',
  /** qwexcloud: a request body or upload larger than the server accepts. */
  TooLarge: 'QWEX_TOO_LARGE',
  /** qwexcloud: too many requests with this token; retry after the time the server names. */
  RateLimited: 'QWEX_RATE_LIMITED',
  /** Something other than a run is not there: an API route, an artifact, a token, a user, a target. */
  NotFound: 'QWEX_NOT_FOUND',
  /** qwexcloud: a submitted workspace refers to content the server does not have; upload it first. */
  BlobMissing: 'QWEX_BLOB_MISSING',
  /** qwexcloud could not be reached, or answered with something that is not its API. */
  ServerUnavailable: 'QWEX_SERVER_UNAVAILABLE',
  Internal: 'QWEX_INTERNAL',

  // Why a run failed (run.error.code): recorded with the run; the CLI exits with the run's own exit code.
  CommandNotFound: 'QWEX_COMMAND_NOT_FOUND',
  CommandNotExecutable: 'QWEX_COMMAND_NOT_EXECUTABLE',
  CommandFailedToStart: 'QWEX_COMMAND_FAILED_TO_START',
  CwdNotFound: 'QWEX_CWD_NOT_FOUND',
  OutOfMemory: 'QWEX_OUT_OF_MEMORY',
  Timeout: 'QWEX_TIMEOUT',
  /** The run was cancelled before it started because it never could (a run it depends on failed). */
  NotStarted: 'QWEX_NOT_STARTED',
  /** How the run ended can no longer be known (its parent process was killed, its container removed...). */
  RunLost: 'QWEX_RUN_LOST',
  /** The workspace could not be sent to, or unpacked on, the machine or pod that runs the command. */
  SyncFailed: 'QWEX_K8S_SYNC_FAILED',
  ClusterJobFailed: 'QWEX_K8S_JOB_FAILED',
  Unschedulable: 'QWEX_K8S_UNSCHEDULABLE',
  Inadmissible: 'QWEX_K8S_INADMISSIBLE',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * The exit status of a command that failed with each code. Commands that
 * wait for a run (run, wait, logs -f, attach) exit with the run's own code
 * instead (see exitCodeOf in run/model.ts); run-error codes map to 1 when a
 * command fails with one itself.
 */
const EXIT_STATUS: Record<ErrorCode, number> = {
  QWEX_USAGE: 2,
  QWEX_RUN_NOT_FOUND: 3,
  QWEX_RUN_AMBIGUOUS: 4,
  QWEX_CONFIG_INVALID: 5,
  QWEX_STATE_UNWRITABLE: 6,
  QWEX_RECORD_INVALID: 7,
  QWEX_INDEX_ERROR: 8,
  QWEX_BACKEND_UNAVAILABLE: 9,
  QWEX_RUN_NOT_ACTIVE: 10,
  QWEX_INVALID_TRANSITION: 11,
  QWEX_DAEMON_UNAVAILABLE: 12,
  QWEX_PROTOCOL_MISMATCH: 13,
  QWEX_DAEMON_ALREADY_RUNNING: 14,
  QWEX_SOCKET_PATH_TOO_LONG: 15,
  QWEX_SERVICE_MANAGER: 16,
  QWEX_IMAGE_NOT_FOUND: 17,
  QWEX_IMAGE_PULL_FAILED: 18,
  QWEX_CONTAINER_FAILED: 19,
  QWEX_UNAUTHORIZED: 20,
  QWEX_FORBIDDEN: 21,
  QWEX_TOO_LARGE: 22,
  QWEX_RATE_LIMITED: 23,
  QWEX_NOT_FOUND: 24,
  QWEX_BLOB_MISSING: 25,
  QWEX_SERVER_UNAVAILABLE: 26,
  QWEX_DOCTOR_FINDINGS: 27,
  QWEX_INTERNAL: 70,
  QWEX_COMMAND_NOT_FOUND: 1,
  QWEX_COMMAND_NOT_EXECUTABLE: 1,
  QWEX_COMMAND_FAILED_TO_START: 1,
  QWEX_CWD_NOT_FOUND: 1,
  QWEX_OUT_OF_MEMORY: 1,
  QWEX_TIMEOUT: 1,
  QWEX_RUN_LOST: 1,
  QWEX_NOT_STARTED: 1,
  QWEX_K8S_SYNC_FAILED: 1,
  QWEX_K8S_JOB_FAILED: 1,
  QWEX_K8S_UNSCHEDULABLE: 1,
  QWEX_K8S_INADMISSIBLE: 1,
};

/** The exit status for an error code (70, like EX_SOFTWARE, for a code this version does not know). */
export function exitStatusFor(code: string): number {
  return (EXIT_STATUS as Record<string, number>)[code] ?? 70;
}

export function isErrorCode(code: string): code is ErrorCode {
  return code in EXIT_STATUS;
}

export interface QwexErrorOptions {
  hint?: string;
  cause?: unknown;
  /** Structured facts a renderer may show (candidates of an ambiguous prefix, a config path). */
  details?: Record<string, unknown>;
  /**
   * The condition may pass by itself (a cluster API, an engine or a host
   * that does not answer, as opposed to one that said no): what failed may
   * be tried again as it was. Not sent over the wire.
   */
  transient?: boolean;
}

export class QwexError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;
  readonly transient: boolean;

  constructor(code: ErrorCode, message: string, options: QwexErrorOptions = {}) {
    super(redactSecrets(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'QwexError';
    this.code = code;
    this.hint = options.hint === undefined ? undefined : redactSecrets(options.hint);
    this.details = options.details;
    this.transient = options.transient === true;
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string; details?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

export function isQwexError(error: unknown): error is QwexError {
  return error instanceof QwexError;
}

/**
 * Wraps an unknown thrown value as a QwexError, keeping a QwexError as it
 * is. A file system that is full, read-only or not ours is a state qwex
 * cannot write, whatever file it was: it gets that code and a hint, not
 * QWEX_INTERNAL.
 */
export function toQwexError(error: unknown, code: ErrorCode = ErrorCode.Internal): QwexError {
  if (error instanceof QwexError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const errno = errnoCode(error);
  if (errno !== undefined && errno in UNWRITABLE) {
    return new QwexError(ErrorCode.StateUnwritable, message, { hint: UNWRITABLE[errno], cause: error });
  }
  return new QwexError(code, message, { cause: error });
}

const UNWRITABLE: Record<string, string> = {
  ENOSPC: 'free some disk space (the project\'s .qwex/ and the state directory, $QWEX_STATE_DIR, need room)',
  EDQUOT: 'your disk quota is used up: free some space',
  EROFS: 'the file system is read-only: set QWEX_STATE_DIR to a writable directory, or run from a writable project',
  EACCES: 'check the permissions of the project\'s .qwex/ and of the state directory ($QWEX_STATE_DIR)',
};

/** A Node system error (ENOENT, EACCES, ENOSPC...), narrowed. */
export function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string';
}

export function errnoCode(error: unknown): string | undefined {
  return isErrnoException(error) ? error.code : undefined;
}

/**
 * True when a record (a run's, a workflow's, a snapshot manifest) exists but could not be read now: its reader's
 * error has a system error other than ENOENT as its cause (EACCES, EIO, EMFILE). A missing record, or one no qwex
 * can parse, is not: reading it again will not do better. Callers that would act on "no record" (cancel a run,
 * create a stage run again, remove a snapshot) must not act on this.
 */
export function isReadFailure(error: unknown): boolean {
  const code = errnoCode((error as { cause?: unknown } | null)?.cause);
  return code !== undefined && code !== 'ENOENT';
}

/** True when `error` (or its cause) says the disk is full: a condition that passes once space is freed. */
export function isNoSpace(error: unknown): boolean {
  const cause = (error as { cause?: unknown } | null)?.cause;
  return errnoCode(error) === 'ENOSPC' || errnoCode(cause) === 'ENOSPC' || /no space left on device/i.test(String((error as Error | null)?.message ?? ''));
}

const SECRET_NAME = /(secret|token|passw(or)?d|passwd|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth)/i;

/** True when an environment variable's name says its value is a secret. */
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/** Replaces the values of secret-looking env assignments, URL passwords and webhook URLs whose path is the secret (Slack's) in free text. */
export function redactSecrets(text: string): string {
  return text
    .replace(/\b([A-Za-z_][A-Za-z0-9_]*)=(\S+)/g, (whole, name: string) => (isSecretName(name) ? `${name}=***` : whole))
    .replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s:/@]+:)[^\s@/]+@/gi, '$1***@')
    .replace(/(\bhooks\.slack(?:-gov)?\.com\/)[^\s"'<>]+/gi, '$1***');
}

/** Returns a copy of an env map with secret-looking values replaced, for listings and errors. */
export function redactEnv(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) out[name] = isSecretName(name) ? '***' : value;
  return out;
}
