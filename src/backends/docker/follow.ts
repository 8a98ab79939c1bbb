import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type Dockerode from 'dockerode';
import { ErrorCode } from '../../errors.js';
import { RunFiles } from '../../paths.js';
import { FollowStoppedError, followUntilExit, type FollowContext } from '../follow-until-exit.js';
import type { ExitInfo, StartedProcess } from '../types.js';
import { inspectQuietly, statusOf, type EngineContainer } from './engine.js';
import { ContainerLogCopy } from './logs.js';

/** How long to wait before asking the engine again when a wait or a log stream failed (the engine restarted). */
const RETRY_MS = 1000;

/**
 * Follows a container with the shared follow-until-exit routine: copies its
 * output from the engine (from the first byte, skipping what the log files
 * already hold: exact across drops and supervisors) and learns its end.
 * `getContainer` is retried until it answers (an engine restarting).
 */
export function followContainer(getContainer: () => Promise<EngineContainer>, details: Record<string, unknown>, runDir: string): StartedProcess {
  const name = String(details.container ?? details.containerId);
  const open = new Set<{ destroy(): void }>();

  const copyOutput = async (container: EngineContainer, ctx: FollowContext): Promise<void> => {
    for (;;) {
      const before = await inspectQuietly(container);
      if (before === 'gone') return;
      // A stopped container's log is read to its end and the stream ends there: that copy is complete.
      const stoppedBefore = before !== undefined && !before.State.Running && !before.State.Restarting;
      // Opening the log files fails only when the run directory is gone: the follow cannot go on.
      const copy = new ContainerLogCopy(join(runDir, RunFiles.stdout), join(runDir, RunFiles.stderr));
      let ended: 'end' | 'dropped' | 'gone';
      let failure: unknown;
      try {
        const logs = await container.logs({ follow: true, stdout: true, stderr: true, abortSignal: ctx.signal });
        open.add(logs);
        ended = await new Promise<'end' | 'dropped'>((resolve) => {
          logs.on('data', (chunk: Buffer) => {
            try {
              copy.push(chunk);
            } catch (error) {
              // The log files cannot be written (a full disk): stop this copy, and say so below.
              failure ??= error;
              logs.destroy();
            }
          });
          logs.on('end', () => resolve('end'));
          logs.on('error', () => resolve('dropped'));
          logs.on('close', () => resolve('dropped')); // after 'end' this changes nothing
        });
        open.delete(logs);
      } catch (error) {
        ended = statusOf(error) === 404 ? 'gone' : 'dropped';
      } finally {
        copy.close();
      }
      if (ctx.signal.aborted) throw new FollowStoppedError();
      if (failure !== undefined) throw failure;
      if (ended === 'gone' || (ended === 'end' && stoppedBefore)) return;
      // The engine ends a follow stream when the container stops, at times before it has sent the
      // last of the output (seen with the local driver on a container that writes megabytes and
      // exits at once): the log is read once more, to its end, skipping what is already here.
      if (ended === 'end') continue;
      await ctx.sleep(RETRY_MS);
    }
  };

  return followUntilExit({
    details,
    runDir,
    followToEnd: async (ctx) => {
      const container = await ctx.retry(getContainer, RETRY_MS);
      const copied = copyOutput(container, ctx);
      copied.catch(() => {}); // its failure is seen below, once the end is known
      const info = await waitForEnd(container, name, runDir, ctx);
      // Output that could not be written (a full disk) leaves the log short; the end is known all the same.
      if (info.lost === undefined) await copied.catch(() => {});
      return info;
    },
    hasEnded: async () => {
      const info = await inspectQuietly(await getContainer());
      if (info === undefined) return undefined; // no engine now: not known to have ended
      if (info === 'gone') return true;
      return !(info.State.Running || info.State.Status === 'created' || info.State.Restarting);
    },
    signal: (sig) => {
      void getContainer()
        .then((c) => c.kill({ signal: sig }))
        .catch(() => {
          // not running any more (409) or gone (404): nothing to signal
        });
    },
    release: async () => {
      try {
        await (await getContainer()).remove({ force: true });
      } catch {
        // already gone, or the engine is away: `qwex doctor` lists what is left
      }
    },
    close: () => {
      for (const stream of open) stream.destroy();
      open.clear();
    },
  });
}

/** Waits for the container to stop and reads how it ended; retries when the engine went away meanwhile. */
async function waitForEnd(container: EngineContainer, name: string, runDir: string, ctx: FollowContext): Promise<ExitInfo> {
  for (;;) {
    try {
      await container.wait({ abortSignal: ctx.signal });
    } catch (error) {
      if (ctx.signal.aborted) throw new FollowStoppedError();
      if (statusOf(error) === 404) return goneInfo(name);
      await ctx.sleep(RETRY_MS);
    }
    if (ctx.signal.aborted) throw new FollowStoppedError();
    const info = await inspectQuietly(container);
    if (info === 'gone') return goneInfo(name);
    if (info === undefined || info.State.Running || info.State.Restarting) continue;
    return exitInfoOf(info, runDir);
  }
}

/**
 * How the container ended. An OOM kill is said from the engine's OOMKilled,
 * and also when the engine missed it: before containerd 2.2
 * (containerd#12714) an OOM event can be lost when the container exits at
 * once (seen here: 1 container in 12 under load, OOMKilled still false 8 s
 * later). A container with a memory limit that died of SIGKILL (137) with
 * no stop asked by qwex (a cancel or a timeout writes its request first) was
 * killed by the kernel, and almost always for memory: said as likely.
 */
function exitInfoOf(info: Dockerode.ContainerInspectInfo, runDir: string): ExitInfo {
  const finished = Date.parse(info.State.FinishedAt);
  const endedAt = Number.isNaN(finished) || finished <= 0 ? {} : { endedAt: new Date(finished) };
  const exit = { exitCode: info.State.ExitCode, signal: null, ...endedAt };
  if (info.State.OOMKilled) {
    return { ...exit, error: { code: ErrorCode.OutOfMemory, message: 'the engine killed the container: it ran out of memory (see the memory limit)' } };
  }
  const limit = info.HostConfig?.Memory ?? 0;
  if (info.State.ExitCode === 137 && limit > 0 && !existsSync(join(runDir, RunFiles.cancelRequest))) {
    const mib = Math.round(limit / 1024 / 1024);
    return { ...exit, error: { code: ErrorCode.OutOfMemory, message: `the container was killed (SIGKILL, exit 137) under its memory limit of ${mib} MiB: most likely it ran out of memory (the engine did not report an OOM kill; it can miss them)` } };
  }
  return exit;
}

function goneInfo(name: string): ExitInfo {
  return { exitCode: null, signal: null, lost: `its container ${name} was removed before its end was recorded` };
}
