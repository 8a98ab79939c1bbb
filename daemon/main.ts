import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { toQwexError } from '../src/errors.js';
import { daemonLogPath, runtimeDir, socketPath } from '../src/paths.js';
import { declareLongLived } from '../src/process/role.js';
import { RunStore } from '../src/store/run-store.js';
import { checkSocketPath, ensureRuntimeDir } from '../src/runtime-dir.js';
import { VERSION } from '../src/version.js';
import { ContentStore } from '../src/workspace/snapshot.js';
import { collectGarbage } from '../src/workspace/gc.js';
import { DaemonLock } from './lock.js';
import { DaemonLog } from './log.js';
import { RpcServer } from './server.js';
import { Supervisor } from '../src/run/supervisor.js';
import { GpuLedger, gpuLedgerSettings } from '../src/gpu/ledger.js';
import { WorkflowManager } from '../src/workflow/manager.js';
import { attachNotifications, notifyWorkflowEnd, type Notifications } from '../src/notify/index.js';

const GC_INTERVAL_MS = 24 * 60 * 60 * 1000;

export interface DaemonOptions {
  concurrency: number;
  logToStderr: boolean;
}

/**
 * Runs qwexd until SIGTERM, SIGINT or daemon.shutdown. Start-up and
 * shutdown are ordered; each resource is closed by this function, in the
 * reverse order it was opened. Runs go on after qwexd stops.
 */
export async function runDaemon(options: DaemonOptions): Promise<number> {
  // Many runs start here: backends may keep a helper that makes each start cheaper (the local shims' spawner).
  declareLongLived();
  const dir = runtimeDir();
  const socket = socketPath();
  checkSocketPath(socket);
  ensureRuntimeDir(dir);
  const lock = DaemonLock.acquire(join(dir, 'qwexd.lock'));
  const log = new DaemonLog(daemonLogPath(), options.logToStderr);
  // Group commit: many runs' records are flushed together, off the event loop (see RunStore).
  const store = new RunStore({ groupCommit: true });
  let supervisor: Supervisor | undefined;
  let gpus: GpuLedger | undefined;
  let workflows: WorkflowManager | undefined;
  let server: RpcServer | undefined;
  let notifications: Notifications | undefined;
  let stopping: Promise<void> | undefined;
  let gcTimer: NodeJS.Timeout | undefined;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));

  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.info('stopping', { reason });
      if (gcTimer) clearInterval(gcTimer);
      await server?.close();
      gpus?.close();
      workflows?.close();
      await notifications?.close();
      supervisor?.close();
      store.close();
      rmSync(socket, { force: true });
      rmSync(join(dir, 'qwexd.pid'), { force: true });
      log.info('stopped');
      log.close();
      lock.release();
      stopped();
    })();
    return stopping;
  };

  try {
    // Holding the lock, any socket file left here is a dead daemon's.
    rmSync(socket, { force: true });
    // qwexd supervises its runs in-process, and takes over any whose supervisor died.
    supervisor = new Supervisor(store, { concurrency: options.concurrency, log });
    // Runs that ask for GPUs of this machine start when the ledger has enough free; it counts what active runs hold first.
    const ledger = new GpuLedger({ store, log, poke: () => supervisor?.poke(), ...gpuLedgerSettings(process.env) });
    gpus = ledger;
    ledger.restoreActive();
    supervisor.addAdmission(ledger);
    // Runs a direct-mode monitor took over end outside the supervisor's admission rules: their GPUs are freed here.
    supervisor.onRunEnd((runDir) => ledger.release(runDir));
    // Workflows, dependencies and retries: an admission rule of the queue, added before it recovers.
    workflows = new WorkflowManager(supervisor, log);
    // Before recover(): ends of runs it adopts are told too. A journal that cannot be opened costs notifications, not the daemon.
    notifications = await attachNotifications(supervisor, store, (level, event, fields) => log.write(level, event, fields)).catch((error: unknown) => {
      log.error('notify-unavailable', { message: toQwexError(error).message });
      return undefined;
    });
    // A workflow's end goes to the project's targets that fire on `workflow` (docs/notifications.md).
    if (notifications) {
      workflows.onWorkflowEnd((workflow) => {
        notifyWorkflowEnd(workflow).catch((error: unknown) => log.error('notify-workflow-failed', { workflowId: workflow.id, message: toQwexError(error).message }));
      });
    }
    await supervisor.recover();
    await workflows.recover();
    server = new RpcServer({ socketPath: socket, store, supervisor, workflows, log, onShutdown: () => void stop('daemon.shutdown') });
    const umask = process.umask(0o077); // the socket is created 0600: no window where others could connect
    try {
      await server.listen();
    } finally {
      process.umask(umask);
    }
    writeFileSync(join(dir, 'qwexd.pid'), `${process.pid}\n`, { mode: 0o600 });
    // Snapshot objects that no run references are collected once a day.
    gcTimer = setInterval(() => {
      try {
        log.info('gc', { ...collectGarbage(new ContentStore(), store.runIndex()) });
      } catch (error) {
        log.warn('gc-failed', { message: (error as Error).message });
      }
    }, GC_INTERVAL_MS);
    gcTimer.unref();
    log.info('ready', { version: VERSION, socket, concurrency: options.concurrency });
  } catch (error) {
    log.error('start-failed', { message: toQwexError(error).message });
    await stop('start-failed');
    throw error;
  }

  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void stop(signal));
  process.on('SIGHUP', () => log.info('sighup-ignored'));
  // `qwex cancel` without qwexd (QWEX_NO_DAEMON=1) writes a stop request and signals the run's supervisor: us.
  process.on('SIGUSR1', () => supervisor?.checkStopRequests());
  await done;
  return 0;
}
