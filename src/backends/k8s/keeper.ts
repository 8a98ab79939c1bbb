import type { ArtifactManifest } from '../../workspace/artifacts.js';
import type { ArtifactSettings } from '../../run/model.js';
import { shellQuote } from '../shell-quote.js';
import { packWatchedCommand, receiveArtifacts } from '../tar-transfer.js';
import type { Cluster } from './cluster.js';
import type { ArtifactTarget } from '../types.js';
import { podExec } from './exec.js';
import { CONTROL_MOUNT, KEEPER_CONTAINER, WORKSPACE_MOUNT } from './manifest.js';

/**
 * What qwex does in a pod through its `qwex-keeper` container (the user's
 * image, `sh`), which holds the pod and its /workspace after the command
 * ends: renew the keeper's lease while qwex watches, signal the command
 * (the pod shares one process namespace, so the keeper sees it), bring
 * out/ home, and let the pod go.
 */

/** Tells the keeper that someone still watches: its lease starts again. */
export async function renewLease(cluster: Cluster, pod: string): Promise<void> {
  await podExec(cluster, pod, KEEPER_CONTAINER, ['touch', `${CONTROL_MOUNT}/lease`]);
}

/** Tells the keeper that out/ is home (or need not be): it exits, and the pod finishes. */
export async function letGo(cluster: Cluster, pod: string): Promise<boolean> {
  return (await podExec(cluster, pod, KEEPER_CONTAINER, ['touch', `${CONTROL_MOUNT}/collected`])).code === 0;
}

/**
 * Sends a signal to the command in the `main` container, as a node sends
 * it to a container's PID 1: SIGTERM to the command's top process only
 * (its own children are its business, as under Docker's init), SIGKILL to
 * every process of it. The command's processes are those whose environment
 * has the run's QWEX_RUN_ID (main's alone does: the keeper's and the sync
 * container's have none). True when at least one process was signalled;
 * false when none could be (no `tr` in the image, or a process the keeper
 * may not read): the caller then has the node stop the pod instead.
 */
export async function signalCommand(cluster: Cluster, pod: string, runId: string, signal: NodeJS.Signals, abort?: AbortSignal): Promise<boolean> {
  const r = await podExec(cluster, pod, KEEPER_CONTAINER, ['sh', '-c', SIGNAL_SCRIPT, 'sh', signal.replace(/^SIG/, ''), runId], abort ? { signal: abort } : {});
  return r.code === 0;
}

const SIGNAL_SCRIPT = [
  'sig=$1; marker="QWEX_RUN_ID=$2"; n=0',
  'marked() { case "$(tr \'\\0\' \'\\n\' 2>/dev/null < "/proc/$1/environ")" in *"$marker"*) return 0 ;; esac; return 1; }',
  'for d in /proc/[0-9]*; do',
  '  p=${d#/proc/}',
  '  [ "$p" = "$$" ] && continue',
  '  marked "$p" || continue',
  '  if [ "$sig" != KILL ]; then',
  '    pp=0; while read -r k v; do [ "$k" = PPid: ] && pp=$v; done 2>/dev/null < "$d/status"',
  '    marked "$pp" && continue',
  '  fi',
  '  kill -s "$sig" "$p" 2>/dev/null && n=$((n+1))',
  'done',
  '[ "$n" -gt 0 ]',
].join('\n');

/** Packs the watched directories in the pod and brings them into the run directory (tar-transfer.ts checks every path). */
export async function collectOut(cluster: Cluster, pod: string, target: ArtifactTarget): Promise<ArtifactManifest> {
  const cwd = target.cwd ? `${WORKSPACE_MOUNT}/${target.cwd}` : WORKSPACE_MOUNT;
  let failure: string | undefined;
  const manifest = await receiveArtifacts(async (write) => {
    const r = await podExec(cluster, pod, KEEPER_CONTAINER, ['sh', '-c', `cd ${shellQuote(cwd)} 2>/dev/null || exit 0; ${packWatchedCommand(target.settings.watch, shellQuote)}`], { onStdout: write });
    if (r.code !== 0) failure = r.stderr.trim();
  }, target);
  if (failure !== undefined) throw new Error(`tar in the pod failed: ${failure}`);
  return manifest;
}

/** The manifest of a run whose command never ran: nothing to bring home, and nothing went wrong. */
export function nothingToCollect(target: { runId: string; settings: ArtifactSettings; runDir: string }): Promise<ArtifactManifest> {
  return receiveArtifacts(() => Promise.resolve(), target);
}
