#!/usr/bin/env node
/**
 * The per-run monitor: `node monitor.js RUN_DIR [--adopt]`. Launched detached by
 * `qwex run` in direct mode; supervises exactly one run from pending to its
 * final record, then exits. With --adopt it takes over a run that is already
 * running and whose supervisor died (launched by whoever noticed). SIGUSR1 asks it to cancel the run (what
 * `qwex cancel` sends); SIGTERM/SIGINT/SIGHUP are passed on to the command.
 */
import { Runner } from '../src/runner.js';
import { RunStore } from '../src/store/run-store.js';
import { launchMonitor } from '../src/run/monitor-launch.js';

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), pid: process.pid, event, ...fields })}\n`);
}

async function main(): Promise<number> {
  const dir = process.argv[2];
  const adopt = process.argv[3] === '--adopt';
  if (!dir) {
    log('usage', { message: 'usage: monitor.js RUN_DIR [--adopt]' });
    return 2;
  }
  const store = new RunStore();
  try {
    const supervision = new Runner(store, launchMonitor).supervise(dir, log, { adopt });
    process.on('SIGUSR1', () => supervision.cancel());
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.on(signal, () => {
        log('signal', { signal });
        supervision.forward(signal);
      });
    }
    const run = await supervision.done;
    log('done', { status: run.status, exitCode: run.exitCode, signal: run.signal });
    return 0;
  } catch (error) {
    log('error', { message: (error as Error).message, stack: (error as Error).stack });
    return 1;
  } finally {
    store.close();
  }
}

process.exitCode = await main();
