/**
 * A real, throwaway OpenSSH server for tests: Debian's /usr/sbin/sshd as a
 * child process on a free port on 127.0.0.1, with its own host key, its own
 * authorized key and its own sshd_config, and a client HOME whose
 * ~/.ssh/config and known_hosts point at it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { until } from './helpers.js';

export const SSHD = '/usr/sbin/sshd';

export interface TestSshd {
  port: number;
  /** The client's HOME: .ssh/config (Host qwex-test), .ssh/known_hosts, .ssh/id_ed25519. */
  home: string;
  /** The host alias in the client's ~/.ssh/config. */
  alias: string;
  user: string;
  hostPublicKey: string;
  /** Kills the per-connection sshd processes (cuts every session) and leaves the server listening. */
  cutSessions(): Promise<number>;
  stop(): Promise<void>;
}

/** Why a test sshd cannot run here, or undefined. */
export async function sshdUnavailable(): Promise<string | undefined> {
  if (!existsSync(SSHD)) return `${SSHD} is not installed (apt-get install openssh-server)`;
  const keygen = await execa('ssh-keygen', ['-?'], { reject: false });
  if (keygen.exitCode === 127 || (keygen as { code?: string }).code === 'ENOENT') return 'ssh-keygen is not installed';
  return undefined;
}

/** `extraConfig`: more sshd_config lines (e.g. `SetEnv PATH=...` for a remote without tools). */
export async function startSshd(base: string, extraConfig: string[] = []): Promise<TestSshd> {
  const dir = join(base, 'sshd');
  const home = join(base, 'client-home');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  mkdirSync(join(home, '.ssh'), { recursive: true, mode: 0o700 });
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(home, '.ssh', 'id_ed25519')]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(home, '.ssh', 'id_ed25519.pub')), { mode: 0o600 });
  const port = await freePort();
  const user = userInfo().username;
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin prohibit-password',
      'StrictModes no',
      'UsePAM no',
      'AllowTcpForwarding yes',
      ...extraConfig,
      '',
    ].join('\n'),
  );
  mkdirSync('/run/sshd', { recursive: true });
  const hostPublicKey = readFileSync(join(dir, 'host_key.pub'), 'utf8').trim();
  writeFileSync(join(home, '.ssh', 'known_hosts'), `[127.0.0.1]:${port} ${hostPublicKey.split(' ').slice(0, 2).join(' ')}\n`, { mode: 0o600 });
  const alias = 'qwex-test';
  writeFileSync(join(home, '.ssh', 'config'), `Host ${alias}\n  HostName 127.0.0.1\n  Port ${port}\n  User ${user}\n  IdentityFile ${join(home, '.ssh', 'id_ed25519')}\n`, { mode: 0o600 });
  const child: ChildProcess = spawn(SSHD, ['-D', '-f', join(dir, 'sshd_config'), '-E', join(dir, 'sshd.log')], { stdio: 'ignore' });
  await until(() => (existsSync(join(dir, 'sshd.pid')) ? true : undefined), 10_000, `sshd to start (see ${join(dir, 'sshd.log')})`);
  return {
    port,
    home,
    alias,
    user,
    hostPublicKey,
    cutSessions: async () => {
      const r = await execa('pkill', ['-KILL', '-P', String(child.pid)], { reject: false });
      return r.exitCode === 0 ? 1 : 0;
    },
    stop: async () => {
      await execa('pkill', ['-KILL', '-P', String(child.pid)], { reject: false });
      child.kill('SIGKILL');
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
    server.on('error', reject);
  });
}
