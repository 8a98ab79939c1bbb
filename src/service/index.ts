import { DaemonClient } from '../daemon-client.js';
import { startDaemon } from '../daemon-process.js';
import type { RunStore } from '../store/run-store.js';
import { DaemonRunService } from './daemon.js';
import { DirectRunService } from './direct.js';
import type { RunService } from './run-service.js';

export type { FollowOptions, RunRef, RunService, SubmitRequest } from './run-service.js';

export interface OpenOptions {
  /** Start qwexd when it is not running (what queues many jobs). Called with the started daemon's pid. */
  startDaemon?: boolean | ((pid: number) => void);
}

/**
 * The run service of this process, chosen once: through qwexd when it runs
 * (or when asked to start it), direct otherwise, and always direct with
 * QWEX_NO_DAEMON=1.
 */
export async function openRunService(store: RunStore, options: OpenOptions = {}): Promise<RunService> {
  if (process.env.QWEX_NO_DAEMON === '1') return new DirectRunService(store);
  let client = await DaemonClient.connectIfRunning();
  if (!client && options.startDaemon) {
    const started = await startDaemon();
    if (typeof options.startDaemon === 'function') options.startDaemon(started.pid);
    client = await DaemonClient.connect();
  }
  return client ? new DaemonRunService(client, store) : new DirectRunService(store);
}
