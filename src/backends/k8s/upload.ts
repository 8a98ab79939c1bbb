import { ErrorCode } from '../../errors.js';
import { NO_PROGRESS, type Progress } from '../../progress.js';
import type { RunError, WorkspaceSpec } from '../../run/model.js';
import { ContentStore } from '../../workspace/snapshot.js';
import { abortableSleep } from '../follow-until-exit.js';
import { shellQuote } from '../shell-quote.js';
import { packToBuffer } from '../tar-transfer.js';
import type { Cluster } from './cluster.js';
import { podExec } from './exec.js';
import { CONTROL_MOUNT, SYNC_CONTAINER, WORKSPACE_MOUNT } from './manifest.js';

/** Before sending again an upload that was cut short. */
const RETRY_MS = 1000;
/** The sync script's exit status when the tar it received was shorter than announced (a cut connection): worth retrying. */
const SYNC_CUT_SHORT = 75;

/**
 * Streams the run's workspace snapshot into the pod's `qwex-sync` init
 * container over exec, which unpacks it into /workspace and lets the pod go
 * on. Resolves undefined once it is there; with a RunError when it never
 * can be (the image lacks the tools, exec is forbidden); rejects on a
 * passing failure (the next look tries again) or when `signal` aborts.
 */
export async function uploadWorkspace(cluster: Cluster, pod: string, workspace: WorkspaceSpec, signal: AbortSignal, progress: Progress = NO_PROGRESS): Promise<RunError | undefined> {
  const store = new ContentStore();
  const tar = await packToBuffer(store, store.readManifest(workspace.manifest));
  const cwd = workspace.cwd ? `${WORKSPACE_MOUNT}/${workspace.cwd}` : WORKSPACE_MOUNT;
  const script = syncScript(tar.length, cwd);
  for (let attempt = 1; ; attempt++) {
    const step = progress.step(`sending the workspace to pod ${pod}`, 'bytes', tar.length);
    try {
      const r = await podExec(cluster, pod, SYNC_CONTAINER, ['sh', '-c', script], { stdin: tar, signal, onStdinSent: (sent) => step.set(sent) });
      if (r.code === 0) return undefined;
      if (r.code !== SYNC_CUT_SHORT || attempt >= 3) {
        return { code: ErrorCode.SyncFailed, message: `the workspace could not be unpacked in pod ${pod} (the image needs sh, head and tar): ${r.stderr.trim().split('\n')[0]}` };
      }
    } catch (error) {
      if (signal.aborted) throw error;
      if (/\b403\b/.test(String((error as Error).message))) {
        return { code: ErrorCode.SyncFailed, message: `forbidden: you may not create pods/exec in namespace ${cluster.namespace}, which sending the workspace needs (or use --no-sync)` };
      }
      if (attempt >= 3) throw error;
    } finally {
      step.end();
    }
    await abortableSleep(RETRY_MS, signal);
  }
}

/**
 * Receives the workspace tar on stdin and unpacks it, once: the tar is
 * spooled to a file and unpacked only when complete (a cut upload unpacks
 * nothing), and a lock directory keeps two uploads of the same pod (a
 * supervisor that died mid-upload, and its successor) from unpacking over
 * each other. Knowing the size, it never needs stdin's end.
 */
function syncScript(bytes: number, cwd: string): string {
  const c = CONTROL_MOUNT;
  return [
    `f=${c}/workspace.$$.tar`,
    `head -c ${bytes} > "$f"`,
    `[ "$(wc -c < "$f")" -eq ${bytes} ] || { rm -f "$f"; echo "the workspace upload was cut short" >&2; exit ${SYNC_CUT_SHORT}; }`,
    `until mkdir ${c}/unpacking 2>/dev/null; do sleep 0.1; done`,
    `if [ -e ${c}/synced ]; then r=0; else tar -xf "$f" -C ${WORKSPACE_MOUNT} && mkdir -p ${shellQuote(cwd)} && touch ${c}/synced; r=$?; fi`,
    `rm -f "$f"; rmdir ${c}/unpacking; exit $r`,
  ].join('\n');
}
