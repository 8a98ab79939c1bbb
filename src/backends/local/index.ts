import type { Run } from '../../run/model.js';
import type { BackendDescriptor } from '../types.js';
import { findShim } from './shim.js';

/** Which shim parents local runs here: the compiled one, the Perl fallback, or none (runs cannot outlive their starter). */
function describeShim(): string {
  try {
    const shim = findShim();
    if (shim === null) return 'none: no compiled shim and no perl; runs cannot outlive whoever started them';
    return shim.kind === 'c' ? `compiled (${shim.path})` : `Perl fallback (${shim.perl} ${shim.path}): no C compiler was found at install; setsid'd descendants escape cancel`;
  } catch (error) {
    return `error: ${(error as Error).message}`;
  }
}

/** What the local backend records in run.json under `backend`, enough for another process to adopt the run. */
export interface LocalDetails {
  pid?: number;
  pgid?: number;
  /** Start time token of the command, to tell it apart from a later process with the same pid. */
  startTime?: string;
  /** The shim that parents the command and writes its exit status. */
  shimPid?: number;
  shimStartTime?: string;
}

export function localDetails(run: Pick<Run, 'backend'>): LocalDetails {
  return run.backend as LocalDetails;
}

/** The command on this machine, in its own process group, its output straight onto the run's log files. */
export const local: BackendDescriptor = {
  name: 'local',
  summary: 'this machine',
  traits: { container: false, remote: false, outputNeedsSupervisor: false, clusterScheduled: false },
  flags: [],
  // GPUs of this machine: generic code puts the request in job.gpus and qwexd's ledger hands them out.
  optionKeys: ['gpus'],
  configSchema: (z) => z.strictObject({ gpus: z.union([z.number(), z.string()]).optional() }),
  resolveJob: ({ config }) => {
    const { gpus: _gpus, ...rest } = config;
    return { backendOptions: rest };
  },
  describe: (run) => {
    const { pid } = localDetails(run);
    return pid === undefined ? [] : [['pid', String(pid)]];
  },
  processGroup: (run) => localDetails(run).pgid,
  health: () => [{ label: 'run helper', value: describeShim() }],
  load: async () => new (await import('./backend.js')).LocalBackend(),
};
