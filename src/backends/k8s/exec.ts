import { Readable, Writable } from 'node:stream';
import type * as k8s from '@kubernetes/client-node';
import type { Cluster } from './cluster.js';

/**
 * Runs a command in a container of a pod over the exec API (a WebSocket),
 * with stdin from a buffer and stdout to `onStdout`. Resolves with the
 * command's exit status; rejects when the session is cut before it says
 * (a dropped connection, a pod going away), or with the signal's reason
 * when `signal` aborts (the session is closed).
 */
export function podExec(
  cluster: Cluster,
  pod: string,
  container: string,
  command: string[],
  options: { stdin?: Buffer; onStdout?: (chunk: Buffer) => void; signal?: AbortSignal; onStdinSent?: (bytes: number) => void } = {},
): Promise<{ code: number; stderr: string }> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason as Error);
  const stderr: Buffer[] = [];
  const out = new Writable({ write: (chunk: Buffer, _e, cb) => (options.onStdout?.(chunk), cb()) });
  const err = new Writable({ write: (chunk: Buffer, _e, cb) => (stderr.push(chunk), cb()) });
  return new Promise((resolve, reject) => {
    let status: k8s.V1Status | undefined;
    let socket: { close(): void; bufferedAmount?: number } | undefined;
    const stdin = options.stdin ? pacedStdin(options.stdin, () => socket, options.onStdinSent) : null;
    const onAbort = (): void => {
      socket?.close();
      stdin?.destroy();
      reject(signal!.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = (): void => {
      signal?.removeEventListener('abort', onAbort);
      stdin?.destroy();
    };
    new cluster.lib.Exec(cluster.config)
      .exec(cluster.namespace, pod, container, command, out, err, stdin, false, (s) => (status = s))
      .then((ws) => {
        socket = ws;
        if (signal?.aborted) return ws.close();
        ws.on('close', () => {
          done();
          if (!status) return reject(new Error(`the exec in ${pod}/${container} was cut off`));
          const causes = (status.details?.causes ?? []) as { reason?: string; message?: string }[];
          const code = status.status === 'Success' ? 0 : Number(causes.find((x) => x.reason === 'ExitCode')?.message ?? 1);
          resolve({ code, stderr: Buffer.concat(stderr).toString('utf8') || (status.message ?? '') });
        });
        ws.on('error', () => {
          // 'close' follows and says how it ended
        });
      }, (error: unknown) => {
        done();
        reject(error as Error);
      });
  });
}

/** What stdin hands the WebSocket at a time, and how much it lets queue there before it waits. */
const STDIN_CHUNK = 256 * 1024;
const STDIN_QUEUE = 1024 * 1024;
const STDIN_WAIT_MS = 10;

/**
 * stdin for an exec, fed to the socket only as fast as it sends (the client
 * library writes whatever it reads at once): so that `onSent` can tell how
 * much really left (what was handed over, less what the socket still holds).
 */
function pacedStdin(data: Buffer, socket: () => { bufferedAmount?: number } | undefined, onSent?: (bytes: number) => void): Readable {
  let offset = 0;
  let timer: NodeJS.Timeout | undefined;
  return new Readable({
    read() {
      const feed = (): void => {
        timer = undefined;
        const ws = socket();
        const queued = ws?.bufferedAmount ?? 0;
        if (ws !== undefined) onSent?.(Math.max(0, offset - queued));
        if (ws === undefined || queued > STDIN_QUEUE) {
          timer = setTimeout(feed, STDIN_WAIT_MS);
          return;
        }
        if (offset >= data.length) {
          this.push(null);
          return;
        }
        const chunk = data.subarray(offset, offset + STDIN_CHUNK);
        offset += chunk.length;
        this.push(chunk);
      };
      feed();
    },
    destroy(error, callback) {
      if (timer) clearTimeout(timer);
      callback(error);
    },
  });
}
