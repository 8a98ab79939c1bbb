#!/usr/bin/env node
/**
 * The per-run monitor: `node monitor.js RUN_DIR`. Launched detached in
 * direct mode (by `qwex run`, or by a look at a run whose supervisor died);
 * it claims the run (or leaves at once when a live process has it),
 * supervises it from whatever its record says to its final record, then
 * exits. SIGUSR1 asks it to act on a stop request (what `qwex cancel`
 * sends); SIGTERM/SIGINT/SIGHUP are passed on to the command.
 */
import { launchMonitor } from '../src/run/monitor-launch.js';
import { self, takeOver } from '../src/run/claim.js';
import { Runner } from '../src/run/index.js';
import { RunStore } from '../src/store/run-store.js';

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), pid: process.pid, event, ...fields })}\n`);
}

async function main(): Promise<number> {
  const dir = process.argv[2];
  if (!dir) {
    log('usage', { message: 'usage: monitor.js RUN_DIR' });
    return 2;
  }
  if (!takeOver(dir, self('supervise'))) {
    log('not-mine', { message: 'another live process supervises this run' });
    return 0;
  }
  const store = new RunStore();
  try {
    const supervision = new Runner(store, (d) => launchMonitor(d), log).supervise(dir);
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
