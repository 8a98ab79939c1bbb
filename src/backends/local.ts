import { closeSync, existsSync, openSync } from 'node:fs';
import { once } from 'node:events';
import { execa } from 'execa';
import { executable } from '../command.js';
import { processStartTime, signalGroup } from '../process-info.js';
import type { Job } from '../run.js';
import type { Backend, ExitInfo, RunIO, StartedProcess } from './types.js';

/**
 * Runs the command on this machine as the leader of its own process group,
 * with stdout and stderr opened straight onto the log files: output never
 * passes through a qwex process, so nothing is lost if qwex goes away.
 */
export class LocalBackend implements Backend {
  readonly name = 'local';

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const { file, args } = executable(job);
    const stdoutFd = openSync(io.stdoutPath, 'a', 0o600);
    let stderrFd: number;
    try {
      stderrFd = openSync(io.stderrPath, 'a', 0o600);
    } catch (error) {
      closeSync(stdoutFd);
      throw error;
    }
    const subprocess = execa(file, args, {
      cwd: job.cwd,
      env: io.env,
      extendEnv: false,
      stdin: 'ignore',
      // A file descriptor is handed to the child as is (execa's {file} option would pipe through us).
      // execa's types list only the literals 3..9, though any open descriptor works.
      stdout: stdoutFd as 3,
      stderr: stderrFd as 3,
      detached: true, // own process group, so cancel reaches the whole tree
      cleanup: false, // the run outlives whoever started it
      reject: false,
    });
    const result = subprocess.then((r): ExitInfo => {
      if (r.exitCode !== undefined) return { exitCode: r.exitCode, signal: null };
      if (r.signal !== undefined) return { exitCode: null, signal: r.signal };
      return spawnFailure(r.code, file, job.cwd, r.originalMessage ?? r.shortMessage ?? "the command could not be started");
    });
    const spawned = await Promise.race([
      once(subprocess, 'spawn').then(() => true, () => false),
      result.then(() => false),
    ]);
    closeSync(stdoutFd);
    closeSync(stderrFd);
    const pid = subprocess.pid;
    if (!spawned || pid === undefined) {
      return { spawned: false, details: {}, exited: result, signal: () => {} };
    }
    return {
      spawned: true,
      details: { pid, pgid: pid, startTime: processStartTime(pid) },
      exited: result,
      signal: (sig) => {
        signalGroup(pid, sig);
      },
    };
  }
}

function spawnFailure(code: string | undefined, file: string, cwd: string, message: string): ExitInfo {
  if (code === 'ENOENT' && !existsSync(cwd)) {
    return { exitCode: 127, signal: null, error: { code: 'QWEX_CWD_NOT_FOUND', message: `working directory does not exist: ${cwd}` } };
  }
  if (code === 'ENOENT') {
    return { exitCode: 127, signal: null, error: { code: 'QWEX_COMMAND_NOT_FOUND', message: `command not found: ${file}` } };
  }
  if (code === 'EACCES') {
    return { exitCode: 126, signal: null, error: { code: 'QWEX_COMMAND_NOT_EXECUTABLE', message: `permission denied: ${file}` } };
  }
  return { exitCode: 126, signal: null, error: { code: 'QWEX_COMMAND_FAILED_TO_START', message } };
}
