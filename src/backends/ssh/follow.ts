import { closeSync, existsSync, fstatSync } from 'node:fs';
import { join } from 'node:path';
import type { Client } from 'ssh2';
import type { ArtifactManifest } from '../../workspace/artifacts.js';
import { RunFiles } from '../../paths.js';
import { followUntilExit } from '../follow-until-exit.js';
import { openLogForCopy, writeAllAt } from '../log-file.js';
import { shellQuote } from '../shell-quote.js';
import { packWatchedCommand, receiveArtifacts } from '../tar-transfer.js';
import type { ArtifactTarget, StartedProcess } from '../types.js';
import { connectHost, exec, resolveHost, type HostEntry } from './connection.js';

/** How often a running remote command's logs and exit file are read. */
const POLL_MS = 300;
/** Between reconnection attempts after the connection dropped. */
const RECONNECT_MS = 1000;

class RemoteGone extends Error {}

/**
 * Follows a remote run with the shared follow-until-exit routine: polls its
 * exit file and log sizes, copies new bytes into the local logs by offset
 * (so a copy resumed after a drop, or by another supervisor, is exact), and
 * reconnects after a dropped connection. The end is the exit file, once
 * every byte before it was copied; a closed connection never is.
 */
export function followRemote(details: Record<string, unknown>, runDir: string, hosts: Record<string, HostEntry> | undefined, first?: Client): StartedProcess {
  const remoteDir = String(details.remoteDir);
  const pgid = Number(details.remotePgid);
  const alias = String(details.host);
  let client: Client | undefined = first;

  const adopt = (c: Client): Client => {
    c.on('close', () => {
      if (client === c) client = undefined;
    });
    c.on('error', () => {
      // seen as a failed exec, then a reconnection
    });
    return c;
  };
  if (first) adopt(first);
  const connection = async (): Promise<Client> => {
    if (client) return client;
    client = adopt(await connectHost(await resolveHost(alias, hosts), hosts));
    return client;
  };

  const readStatus = async (c: Client): Promise<{ exit: string; sizes: [number, number] }> => {
    const r = await exec(c, `cd ${shellQuote(remoteDir)} 2>/dev/null || exit 3; printf '%s\\n' "$(cat exit 2>/dev/null)"; wc -c < stdout.log 2>/dev/null || echo 0; wc -c < stderr.log 2>/dev/null || echo 0`);
    if (r.code === 3) throw new RemoteGone();
    const [exit = '', out = '0', err = '0'] = r.stdout.toString('utf8').split('\n');
    return { exit: exit.trim(), sizes: [Number(out.trim()) || 0, Number(err.trim()) || 0] };
  };

  const fetch = async (c: Client, name: string, remoteSize: number): Promise<void> => {
    // At offsets, not appended: a second copier (a look that found the end) writes the same bytes in the same places.
    const fd = openLogForCopy(join(runDir, name === 'stdout.log' ? RunFiles.stdout : RunFiles.stderr));
    try {
      const local = fstatSync(fd).size;
      if (remoteSize <= local) return;
      let at = local;
      await exec(c, `tail -c +${local + 1} ${shellQuote(`${remoteDir}/${name}`)} | head -c ${remoteSize - local}`, {
        onStdout: (chunk) => {
          writeAllAt(fd, chunk, at);
          at += chunk.length;
        },
      });
    } finally {
      closeSync(fd);
    }
  };

  return followUntilExit({
    details,
    runDir,
    followToEnd: async (ctx) => {
      for (;;) {
        try {
          const c = await connection();
          const status = await readStatus(c);
          await fetch(c, 'stdout.log', status.sizes[0]);
          await fetch(c, 'stderr.log', status.sizes[1]);
          if (status.exit !== '') {
            const code = Number(status.exit);
            return { exitCode: Number.isInteger(code) ? code : null, signal: null };
          }
        } catch (error) {
          if (error instanceof RemoteGone) return { exitCode: null, signal: null, lost: `its remote directory ${remoteDir} on ${alias} is gone` };
          if (!existsSync(runDir)) throw error; // nowhere to copy to: the follow cannot go on
          client?.end();
          client = undefined;
          await ctx.sleep(RECONNECT_MS);
          continue;
        }
        await ctx.sleep(POLL_MS);
      }
    },
    hasEnded: async () => {
      try {
        return (await readStatus(await connection())).exit !== '';
      } catch (error) {
        if (error instanceof RemoteGone) return true;
        return undefined;
      }
    },
    signal: (sig) => {
      const name = sig.replace(/^SIG/, '');
      void connection()
        // dash wants "--" before a negative pid, busybox refuses it: try both.
        .then((c) => exec(c, `kill -s ${name} -- -${pgid} 2>/dev/null || kill -s ${name} -${pgid} 2>/dev/null; exit 0`))
        .catch(() => {
          // the remote is away: the next signal (or the grace period's SIGKILL) tries again
        });
    },
    collectArtifacts: async (target) => collectArtifacts(await connection(), remoteDir, target),
    release: async () => {
      try {
        await exec(await connection(), `rm -rf ${shellQuote(`${remoteDir}/workspace`)}; exit 0`);
      } catch {
        // the remote is away: its retention removes the directory later
      }
    },
    close: () => {
      client?.end();
      client = undefined;
    },
  });
}

/** Packs the watched directories on the remote and brings them home (tar-transfer.ts checks every path). */
async function collectArtifacts(client: Client, remoteDir: string, target: ArtifactTarget): Promise<ArtifactManifest> {
  const cwd = `${remoteDir}/workspace${target.cwd ? `/${target.cwd}` : ''}`;
  let failure: string | undefined;
  const manifest = await receiveArtifacts(async (write) => {
    const r = await exec(client, `cd ${shellQuote(cwd)} 2>/dev/null || exit 0; ${packWatchedCommand(target.settings.watch, shellQuote)}`, { onStdout: write });
    if (r.code !== 0) failure = r.stderr.trim();
  }, target);
  if (failure !== undefined) throw new Error(`tar on the remote failed: ${failure}`);
  return manifest;
}
