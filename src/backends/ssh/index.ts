import { ErrorCode, QwexError } from '../../errors.js';
import type { BackendDescriptor } from '../types.js';

/** What the ssh backend records in run.json under `backend`. */
export interface SshDetails {
  host?: string;
  hostname?: string;
  port?: number;
  user?: string;
  remoteDir?: string;
  remotePgid?: number;
}

/** The command on another machine over SSH, with only a POSIX shell and tar there. */
export const ssh: BackendDescriptor = {
  name: 'ssh',
  summary: 'another machine over SSH (needs only sh and tar there)',
  traits: { container: false, remote: true, outputNeedsSupervisor: true, clusterScheduled: false },
  flags: [
    {
      flags: '--host <name>',
      description: 'the machine of an ssh run: a host from qwex.yaml or ~/.ssh/config',
      key: 'host',
      values: async (project) => (await import('./hosts.js')).knownHosts(project),
    },
  ],
  optionKeys: ['host'],
  configSchema: (z) =>
    z.strictObject({
      host: z.string().min(1).optional(),
      root: z.string().min(1).optional(),
      keep_days: z.number().nonnegative().optional(),
      hosts: z
        .record(
          z.string(),
          z.strictObject({
            hostname: z.string().min(1).optional(),
            port: z.number().int().min(1).max(65535).optional(),
            user: z.string().min(1).optional(),
            identity_file: z.string().min(1).optional(),
            proxy_jump: z.string().min(1).optional(),
          }),
        )
        .optional(),
    }),
  resolveJob: ({ config, options }) => {
    const host = options.host ?? config.host;
    if (typeof host !== 'string' || host === '') {
      throw new QwexError(ErrorCode.Usage, 'no host given for an ssh run', { hint: 'pass --host NAME, or set backends.ssh.host in qwex.yaml' });
    }
    return { backendOptions: { ...config, host } };
  },
  describe: (run) => {
    const d = run.backend as SshDetails;
    if (d.host === undefined) return [];
    return [['host', `${d.host} (${d.user ?? '?'}@${d.hostname ?? '?'}:${d.port ?? 22})`], ...(d.remoteDir ? [['remote dir', d.remoteDir] as [string, string]] : [])];
  },
  detect: async () => (await import('./hosts.js')).detectHosts(),
  load: async () => new (await import('./backend.js')).SshBackend(),
};
