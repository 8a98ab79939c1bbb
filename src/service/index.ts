import { existsSync } from 'node:fs';
import { socketPath } from '../paths.js';
import type { RunStore } from '../store/run-store.js';
import type { RunService } from './run-service.js';

export type { FollowOptions, RunRef, RunService, SubmitRequest } from './run-service.js';

/** How many times qwexd is started when it goes away again before this process could say hello to it. */
const START_ATTEMPTS = 3;

export interface OpenOptions {
  /** Start qwexd when it is not running (what queues many jobs). Called with the started daemon's pid. */
  startDaemon?: boolean | ((pid: number) => void);
}

/**
 * The run service of this process, chosen once: through qwexd when it runs
 * (or when asked to start it), direct otherwise, and always direct with
 * QWEX_NO_DAEMON=1. Each kind is loaded only when chosen, and the client of
 * qwexd only when its socket is there: a `qwex ps` without qwexd loads
 * neither the protocol nor the daemon's client.
 */
export async function openRunService(store: RunStore, options: OpenOptions = {}): Promise<RunService> {
  if (process.env.QWEX_NO_DAEMON === '1') return direct(store);
  if (!options.startDaemon && !existsSync(socketPath())) return direct(store);
  // The service is loaded while the client connects and says hello: it is the one needed whenever qwexd answers.
  const service = import('./daemon.js');
  service.catch(() => {}); // its failure to load is reported where it is awaited, if it is
  const { DaemonClient } = await import('../daemon-client.js');
  let client = await DaemonClient.connectIfRunning();
  if (!client && options.startDaemon) {
    const { startDaemon } = await import('../daemon-process.js');
    // A qwexd that dies between its start and our hello (killed, or restarted by its service manager) is started again.
    for (let attempt = 1; !client; attempt++) {
      const started = await startDaemon();
      if (!started.alreadyRunning && typeof options.startDaemon === 'function') options.startDaemon(started.pid);
      client = attempt < START_ATTEMPTS ? await DaemonClient.connectIfRunning() : await DaemonClient.connect();
    }
  }
  if (!client) return direct(store);
  const { DaemonRunService } = await service;
  return new DaemonRunService(client, store);
}

async function direct(store: RunStore): Promise<RunService> {
  const { DirectRunService } = await import('./direct.js');
  return new DirectRunService(store);
}
