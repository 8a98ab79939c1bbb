import { createHash, createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { join } from 'node:path';
import type { Client, ClientChannel, ConnectConfig } from 'ssh2';
import { ErrorCode, QwexError, errnoCode } from '../../errors.js';

/**
 * Connections for the SSH backend, with ssh2: where a host is (qwex.yaml's
 * `backends.ssh.hosts`, then ~/.ssh/config), who we are there (ssh-agent,
 * then key files), and whether it is the machine we think (its host key
 * must be in ~/.ssh/known_hosts; an unknown or changed key is refused,
 * never trusted silently). No secret is ever put in a message.
 */
export interface HostSettings {
  /** The name the user gave (an alias). */
  alias: string;
  hostname: string;
  port: number;
  user: string;
  identityFiles: string[];
  /** Another host alias to connect through. */
  proxyJump?: string;
}

/** A host as qwex.yaml may describe it. */
export interface HostEntry {
  hostname?: string;
  port?: number;
  user?: string;
  identity_file?: string;
  proxy_jump?: string;
}

const CONNECT_TIMEOUT_MS = 15_000;

/** Resolves an alias: qwex.yaml's entry first, then ~/.ssh/config, then the alias as a host name. */
export async function resolveHost(alias: string, configured: Record<string, HostEntry> = {}): Promise<HostSettings> {
  const fromYaml = configured[alias] ?? {};
  const fromSsh = await sshConfigFor(alias);
  const first = (value: unknown): string | undefined => (Array.isArray(value) ? (value[0] as string | undefined) : (value as string | undefined));
  const identity = fromYaml.identity_file ?? undefined;
  const sshIdentities = (Array.isArray(fromSsh.IdentityFile) ? fromSsh.IdentityFile : fromSsh.IdentityFile ? [fromSsh.IdentityFile] : []) as string[];
  const port = fromYaml.port ?? Number(first(fromSsh.Port) ?? 22);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new QwexError(ErrorCode.ConfigInvalid, `ssh host ${alias}: port ${String(port)} is not a port number`);
  }
  const proxy = fromYaml.proxy_jump ?? first(fromSsh.ProxyJump);
  return {
    alias,
    hostname: fromYaml.hostname ?? first(fromSsh.HostName) ?? alias,
    port,
    user: fromYaml.user ?? first(fromSsh.User) ?? localUser(),
    identityFiles: (identity ? [identity] : sshIdentities).map(expandHome),
    ...(proxy && proxy !== 'none' ? { proxyJump: proxy } : {}),
  };
}

async function sshConfigFor(alias: string): Promise<Record<string, string | string[]>> {
  const path = join(homedir(), '.ssh', 'config');
  if (!existsSync(path)) return {};
  const { default: SSHConfig } = await import('ssh-config');
  try {
    return SSHConfig.parse(readFileSync(path, 'utf8')).compute(alias) as Record<string, string | string[]>;
  } catch (error) {
    throw new QwexError(ErrorCode.ConfigInvalid, `cannot read ${path}: ${(error as Error).message}`);
  }
}

/** Opens an authenticated, host-verified connection (through ProxyJump hosts when configured). */
export async function connectHost(settings: HostSettings, configured: Record<string, HostEntry> = {}, depth = 0): Promise<Client> {
  if (depth > 4) throw new QwexError(ErrorCode.ConfigInvalid, `ssh host ${settings.alias}: ProxyJump goes more than 4 hops deep (a loop?)`);
  let sock: NodeJS.ReadableStream | undefined;
  let jump: Client | undefined;
  if (settings.proxyJump) {
    const jumpSettings = await resolveHost(settings.proxyJump.split(',')[0]!.replace(/^.*@/, ''), configured);
    jump = await connectHost(jumpSettings, configured, depth + 1);
    sock = await new Promise<ClientChannel>((resolve, reject) => {
      jump!.forwardOut('127.0.0.1', 0, settings.hostname, settings.port, (error, channel) => (error ? reject(unreachable(settings, error)) : resolve(channel)));
    });
  }
  const { Client: SshClient } = await import('ssh2');
  const client = new SshClient();
  const { keys, unreadable } = readKeys(settings.identityFiles);
  const tried: string[] = [];
  const agent = process.env.SSH_AUTH_SOCK;
  let hostKeyProblem: QwexError | undefined;
  const config: ConnectConfig = {
    host: settings.hostname,
    port: settings.port,
    username: settings.user,
    readyTimeout: CONNECT_TIMEOUT_MS,
    keepaliveInterval: 10_000,
    keepaliveCountMax: 3,
    ...(sock ? { sock: sock as unknown as ConnectConfig['sock'] } : {}),
    hostVerifier: (key: Buffer) => {
      hostKeyProblem = checkHostKey(settings, key);
      return hostKeyProblem === undefined;
    },
    authHandler: (_methodsLeft, _partial, next) => {
      if (agent && !tried.includes('ssh-agent')) {
        tried.push('ssh-agent');
        return next({ type: 'agent', username: settings.user, agent });
      }
      for (const key of keys) {
        const label = `key ${key.path}`;
        if (tried.includes(label)) continue;
        tried.push(label);
        return next({ type: 'publickey', username: settings.user, key: key.data });
      }
      return next(false as never);
    },
  };
  return new Promise<Client>((resolve, reject) => {
    client.once('ready', () => {
      if (jump) client.once('close', () => jump!.end());
      resolve(client);
    });
    client.once('error', (error: Error & { level?: string }) => {
      jump?.end();
      if (hostKeyProblem) return reject(hostKeyProblem);
      if (error.level === 'client-authentication') {
        return reject(
          new QwexError(ErrorCode.BackendUnavailable, `authentication to ${settings.user}@${settings.alias} failed (tried: ${tried.length > 0 ? tried.join(', ') : 'nothing: no ssh-agent and no key file'}${unreadable.length > 0 ? `; could not read ${unreadable.join(', ')}` : ''})`, {
            hint: 'load your key into ssh-agent (ssh-add), or name it with IdentityFile in ~/.ssh/config or identity_file in qwex.yaml',
          }),
        );
      }
      reject(unreachable(settings, error));
    });
    client.connect(config);
  });
}

/**
 * Runs one command on the remote; its stdout is collected unless `onStdout`
 * takes it. When `signal` aborts, the channel is closed (which ends a
 * transfer on it) and the promise rejects with the signal's reason.
 */
export function exec(
  client: Client,
  command: string,
  options: { stdin?: NodeJS.ReadableStream | string | Buffer; onStdout?: (chunk: Buffer) => void; signal?: AbortSignal } = {},
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason as Error);
  return new Promise((resolve, reject) => {
    let channel: ClientChannel | undefined;
    const onAbort = (): void => {
      channel?.close();
      reject(signal!.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const settle = (fn: () => void): void => {
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    client.exec(command, (error, opened) => {
      if (error) return settle(() => reject(error));
      channel = opened;
      if (signal?.aborted) return void opened.close();
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let code: number | null = null;
      opened.on('data', (chunk: Buffer) => (options.onStdout ? options.onStdout(chunk) : out.push(chunk)));
      opened.stderr.on('data', (chunk: Buffer) => err.push(chunk));
      opened.on('exit', (c: number | null) => (code = c));
      opened.on('close', () => settle(() => resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') })));
      opened.on('error', (e: Error) => settle(() => reject(e)));
      const stdin = options.stdin;
      if (stdin === undefined) opened.end();
      else if (typeof stdin === 'string' || Buffer.isBuffer(stdin)) opened.end(stdin);
      else stdin.pipe(opened);
    });
  });
}

/** The key files to offer. One that does not exist is skipped, as ssh does; one that cannot be read is named if authentication fails. */
function readKeys(paths: string[]): { keys: { path: string; data: Buffer }[]; unreadable: string[] } {
  const candidates = paths.length > 0 ? paths : ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((n) => join(homedir(), '.ssh', n));
  const keys: { path: string; data: Buffer }[] = [];
  const unreadable: string[] = [];
  for (const path of candidates) {
    try {
      keys.push({ path, data: readFileSync(path) });
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') unreadable.push(`${path} (${errnoCode(error) ?? (error as Error).message})`);
    }
  }
  return { keys, unreadable };
}

/**
 * Checks the offered key against ~/.ssh/known_hosts (plain and hashed
 * names, `[host]:port` for other ports, @revoked). Undefined when it matches.
 */
export function checkHostKey(settings: Pick<HostSettings, 'alias' | 'hostname' | 'port'>, key: Buffer, knownHostsPath = join(homedir(), '.ssh', 'known_hosts')): QwexError | undefined {
  const names = new Set([settings.hostname, settings.alias].map((h) => (settings.port === 22 ? h : `[${h}]:${settings.port}`)));
  const offered = key.toString('base64');
  const fingerprint = `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
  const keyType = key.subarray(4, 4 + key.readUInt32BE(0)).toString('latin1');
  let text = '';
  try {
    text = readFileSync(knownHostsPath, 'utf8');
  } catch (error) {
    // No file: every host is unknown. One that cannot be read refuses the host too, but says why.
    if (errnoCode(error) !== 'ENOENT') {
      return new QwexError(ErrorCode.BackendUnavailable, `cannot check the host key of ${settings.alias}: ${knownHostsPath} cannot be read (${errnoCode(error) ?? (error as Error).message})`, {
        hint: `check the permissions of ${knownHostsPath}`,
      });
    }
  }
  let sameTypeOther = false;
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 3 || fields[0]!.startsWith('#')) continue;
    const marker = fields[0]!.startsWith('@') ? fields.shift() : undefined;
    const [hosts, type, data] = fields as [string, string, string];
    if (!hostsMatch(hosts, names)) continue;
    if (marker === '@revoked' && data === offered) {
      return new QwexError(ErrorCode.BackendUnavailable, `the host key of ${settings.alias} (${fingerprint}) is marked revoked in ${knownHostsPath}`);
    }
    if (marker === '@cert-authority') continue;
    if (data === offered) return undefined;
    if (type === keyType) sameTypeOther = true;
  }
  const hostName = [...names][0]!;
  if (sameTypeOther) {
    return new QwexError(ErrorCode.BackendUnavailable, `the host key of ${settings.alias} has CHANGED (${keyType} ${fingerprint} does not match ${knownHostsPath}): refusing to connect`, {
      hint: `someone may be intercepting the connection, or the host was reinstalled; if you know it was, remove the old key with: ssh-keygen -R '${hostName}'`,
    });
  }
  return new QwexError(ErrorCode.BackendUnavailable, `the host key of ${settings.alias} (${keyType} ${fingerprint}) is not in ${knownHostsPath}: refusing to connect to an unknown host`, {
    hint: `check the fingerprint, then accept it once with: ssh${settings.port === 22 ? '' : ` -p ${settings.port}`} ${settings.hostname} true (or ssh-keyscan${settings.port === 22 ? '' : ` -p ${settings.port}`} ${settings.hostname} >> ${knownHostsPath})`,
  });
}

function hostsMatch(field: string, names: Set<string>): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (!salt || !hash) return false;
    for (const name of names) {
      if (createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash) return true;
    }
    return false;
  }
  let matched = false;
  for (const pattern of field.split(',')) {
    const negated = pattern.startsWith('!');
    const re = new RegExp(`^${(negated ? pattern.slice(1) : pattern).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
    for (const name of names) {
      if (re.test(name)) {
        if (negated) return false;
        matched = true;
      }
    }
  }
  return matched;
}

function unreachable(settings: HostSettings, error: Error & { code?: string }): QwexError {
  const where = `${settings.alias}${settings.alias === settings.hostname ? '' : ` (${settings.hostname})`} port ${settings.port}`;
  return new QwexError(ErrorCode.BackendUnavailable, `cannot reach ${where}: ${error.code ?? error.message}`, {
    hint: 'check the host name and port (qwex.yaml backends.ssh.hosts or ~/.ssh/config), that sshd runs there, and the network',
    transient: true,
  });
}

function expandHome(path: string): string {
  return path.startsWith('~/') ? join(homedir(), path.slice(2)) : path;
}

function localUser(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry for this uid (a container running as an arbitrary uid): $USER names the user.
    return process.env.USER ?? 'root';
  }
}
