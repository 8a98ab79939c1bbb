#!/usr/bin/env node
/**
 * qwexd: the optional per-user supervisor. Serves JSON-RPC 2.0 over a Unix
 * socket, queues runs beyond its concurrency limit, and re-adopts runs after
 * a restart. `qwexd --foreground` is for service managers; plain `qwexd`
 * starts one in the background and returns once it answers.
 */
import { availableParallelism } from 'node:os';
import { Command } from 'commander';
import { ErrorCode, exitStatusFor, toQwexError } from '../src/errors.js';
import { startDaemon } from '../src/daemon-process.js';
import { daemonLogPath } from '../src/paths.js';
import { VERSION } from '../src/version.js';
import { DaemonLog } from './log.js';
import { runDaemon } from './main.js';

/** Exit status when QWEX_FATAL_ERRORS=1 turns an unhandled error into an exit (sysexits' EX_SOFTWARE). */
const EXIT_UNHANDLED_ERROR = 70;

/**
 * An error no code path handled must not take qwexd (and the queue of every
 * client) down: it is logged at error level and qwexd serves on. Tests set
 * QWEX_FATAL_ERRORS=1 so that such a bug fails them instead: log, then exit 70.
 */
function guardAgainstUnhandledErrors(logToStderr: boolean): void {
  let log: DaemonLog | undefined;
  const report = (event: string, error: unknown): void => {
    const fatal = process.env.QWEX_FATAL_ERRORS === '1';
    const fields = { message: error instanceof Error ? error.message : String(error), stack: error instanceof Error ? error.stack : undefined, fatal };
    try {
      // Its own file handle on the daemon's log: runDaemon's may be closed already, or not open yet.
      log ??= new DaemonLog(daemonLogPath(), logToStderr);
      log.error(event, fields);
    } catch {
      process.stderr.write(`qwexd: ${event}: ${fields.message}\n`);
    }
    if (fatal) process.exit(EXIT_UNHANDLED_ERROR);
  };
  // A closed stderr (its reader gone) would otherwise raise an error per log line, each one reported to stderr again.
  process.stderr.on('error', () => {});
  process.on('unhandledRejection', (reason) => report('unhandled-rejection', reason));
  process.on('uncaughtException', (error) => report('uncaught-exception', error));
}

const program = new Command('qwexd')
  .description('the qwex supervisor daemon')
  .version(VERSION, '-V, --version')
  .option('--foreground', 'stay in the foreground and log to stderr as well (for systemd, launchd)')
  .option('--concurrency <n>', 'runs at a time; more wait in the queue (default: $QWEX_CONCURRENCY or the number of CPUs)')
  .exitOverride()
  .configureOutput({ writeErr: (text) => process.stderr.write(text) });

async function main(): Promise<number> {
  try {
    program.parse(process.argv);
  } catch (error) {
    const code = (error as { code?: string }).code;
    return code === 'commander.helpDisplayed' || code === 'commander.version' ? 0 : exitStatusFor(ErrorCode.Usage);
  }
  const options = program.opts<{ foreground?: boolean; concurrency?: string }>();
  const raw = options.concurrency ?? process.env.QWEX_CONCURRENCY;
  const concurrency = raw === undefined ? availableParallelism() : Number(raw);
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    process.stderr.write(`qwexd: --concurrency: "${raw}" is not a whole number of at least 1\n`);
    return exitStatusFor(ErrorCode.Usage);
  }
  try {
    if (!options.foreground) {
      const started = await startDaemon({ concurrency });
      process.stdout.write(`qwexd ${started.alreadyRunning ? 'is already running' : 'started'} (pid ${started.pid}, socket ${started.socket})\n`);
      return 0;
    }
    const logToStderr = process.env.QWEX_DAEMON_DETACHED !== '1';
    guardAgainstUnhandledErrors(logToStderr);
    return await runDaemon({ concurrency, logToStderr });
  } catch (error) {
    const qe = toQwexError(error);
    process.stderr.write(`qwexd: ${qe.message}\n`);
    if (qe.hint) process.stderr.write(`hint: ${qe.hint}\n`);
    // The same table as qwex's (src/errors.ts): QWEX_DAEMON_ALREADY_RUNNING is 14, QWEX_SOCKET_PATH_TOO_LONG 15.
    return exitStatusFor(qe.code);
  }
}

process.exitCode = await main();
