import { containerConfigShape, resolveContainerJob } from '../../config/container.js';
import type { BackendDescriptor } from '../types.js';

/** What the Docker backend records in run.json under `backend`. */
export interface DockerDetails {
  container?: string;
  containerId?: string;
  image?: string;
  /** The engine, as DOCKER_HOST names it. */
  engine?: string;
}

/** The command in a container of the user's image on a Docker engine (its HTTP API over node:http), the project bind-mounted at /workspace. */
export const docker: BackendDescriptor = {
  name: 'docker',
  summary: 'a container on a Docker engine',
  traits: { container: true, remote: false, outputNeedsSupervisor: true, clusterScheduled: false },
  flags: [],
  optionKeys: [],
  configSchema: (z) =>
    z.strictObject({
      ...containerConfigShape(z),
      network: z.string().min(1).optional(),
      mounts: z.array(z.string()).optional(),
    }),
  resolveJob: (input) => ({ backendOptions: { ...input.config }, container: resolveContainerJob('docker', input) }),
  describe: (run) => {
    const d = run.backend as DockerDetails;
    return d.container === undefined ? [] : [['container', `${d.container}${d.engine ? ` on ${d.engine}` : ''}`]];
  },
  detect: async () => (await import('./detect.js')).detectEngine(),
  findOrphans: async (context) => (await import('./orphans.js')).findOrphanContainers(context),
  load: async () => new (await import('./backend.js')).DockerBackend(),
};
