import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { LOCAL_CONFIG_FILE, PROJECT_CONFIG_FILE } from '../../paths.js';
import type { Detection } from '../types.js';

/**
 * SSH hosts one can name with --host: those of qwex.yaml's backends.ssh.hosts
 * and the `Host` entries of ~/.ssh/config (patterns with wildcards name no
 * host). Read as plain text and YAML, quickly: for Tab completion and
 * `qwex init`, which never load the backend.
 */
export function sshConfigHosts(path: string = join(homedir(), '.ssh', 'config')): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return []; // no ~/.ssh/config (or not readable): Tab completion and `qwex init` offer no host from it
  }
  const hosts: string[] = [];
  for (const line of text.split('\n')) {
    const match = /^\s*Host(?:\s*=\s*|\s+)(.+?)\s*$/i.exec(line);
    if (!match) continue;
    for (const name of match[1]!.split(/\s+/)) if (!/[*?!]/.test(name) && !hosts.includes(name)) hosts.push(name);
  }
  return hosts;
}

export async function knownHosts(project: string): Promise<string[]> {
  const hosts = new Set<string>();
  for (const file of [join(project, PROJECT_CONFIG_FILE), join(project, LOCAL_CONFIG_FILE)]) {
    try {
      const config = parse(readFileSync(file, 'utf8')) as { backends?: { ssh?: { hosts?: unknown } } } | null;
      const named = config?.backends?.ssh?.hosts;
      if (named && typeof named === 'object') for (const name of Object.keys(named)) hosts.add(name);
    } catch {
      // no such file, or not YAML (being edited): its hosts are not offered
    }
  }
  for (const name of sshConfigHosts()) hosts.add(name);
  return [...hosts];
}

/** For `qwex init`: the first host of ~/.ssh/config, the others named in the summary. */
export function detectHosts(): Promise<Detection> {
  const hosts = sshConfigHosts();
  const path = join(homedir(), '.ssh', 'config');
  if (hosts.length === 0) return Promise.resolve({ found: false, summary: `no Host entries in ${path}`, config: { host: 'gpu-box' } });
  return Promise.resolve({
    found: true,
    summary: `${path}: ${hosts.length === 1 ? `host ${hosts[0]}` : `hosts ${hosts.join(', ')} (the first is the default; --host picks another)`}`,
    config: { host: hosts[0] },
  });
}
