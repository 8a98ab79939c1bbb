#!/usr/bin/env node
/**
 * qwexd: the optional per-user supervisor. Serves JSON-RPC 2.0 over a Unix
 * socket, queues runs beyond its concurrency limit, and re-adopts runs after
 * a restart. `qwexd --foreground` is for service managers; plain `qwexd`
 * starts one in the background and returns once it answers.
 */
import { availableParallelism } from 'node:os';
import { Command } from 'commander';
import { ErrorCode, QwexError, toQwexError } from '../src/errors.js';
import { startDaemon } from '../src/daemon-process.js';
import { VERSION } from '../src/version.js';
import { runDaemon } from './main.js';

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
    return code === 'commander.helpDisplayed' || code === 'commander.version' ? 0 : 2;
  }
  const options = program.opts<{ foreground?: boolean; concurrency?: string }>();
  const raw = options.concurrency ?? process.env.QWEX_CONCURRENCY;
  const concurrency = raw === undefined ? availableParallelism() : Number(raw);
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    process.stderr.write(`qwexd: --concurrency: "${raw}" is not a whole number of at least 1\n`);
    return 2;
  }
  try {
    if (!options.foreground) {
      const started = await startDaemon({ concurrency });
      process.stdout.write(`qwexd ${started.alreadyRunning ? 'is already running' : 'started'} (pid ${started.pid}, socket ${started.socket})\n`);
      return 0;
    }
    return await runDaemon({ concurrency, logToStderr: process.env.QWEX_DAEMON_DETACHED !== '1' });
  } catch (error) {
    const qe = toQwexError(error);
    process.stderr.write(`qwexd: ${qe.message}\n`);
    if (qe.hint) process.stderr.write(`hint: ${qe.hint}\n`);
    return qe.code === ErrorCode.DaemonAlreadyRunning ? 3 : qe instanceof QwexError && qe.code === ErrorCode.SocketPathTooLong ? 4 : 1;
  }
}

process.exitCode = await main();
