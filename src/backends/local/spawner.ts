import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { installPath } from '../../install-paths.js';
import { isLongLived } from '../../process/role.js';
import { parseShimReport, type ShimReport } from './shim.js';

/**
 * qwexd's side of libexec/qwex-spawner (its contract is at the top of
 * qwex-spawner.c): one small helper process that forks each shim, so that
 * qwexd does not fork its own 80 MB process and block its event loop for
 * every run. Only a long-lived process that starts many runs uses it
 * (isLongLived); a CLI or a monitor starting one run spawns its shim itself.
 * QWEX_SPAWNER=0 turns it off.
 */

export interface SpawnRequest {
  /** The program (an absolute path: no PATH search) and its arguments, argv[0] not included. */
  file: string;
  args: readonly string[];
  /** The program is the compiled shim, which the spawner has built in: its child runs that copy, with no exec. */
  builtinShim?: boolean;
  cwd: string;
  env: Record<string, string>;
  stdoutPath: string;
  stderrPath: string;
}

export interface SpawnOutcome {
  /** The shim's one line, or the spawner's "failed" when no shim could be started; undefined: no word (see below). */
  report: ShimReport | undefined;
  /** The shim's pid once the spawner forked it. */
  shimPid?: number;
  /** No word because the spawner died: when no shim was forked, the request may be sent again (the shim's O_EXCL shim.json keeps a run from starting twice). */
  spawnerDied?: boolean;
}

interface Pending {
  resolve: (outcome: SpawnOutcome) => void;
  shimPid?: number;
  /** The shim's line, when it came before the spawner's "forked" (the child ran before its parent wrote). */
  report?: ShimReport | undefined;
  reported?: true;
}

let shared: Spawner | undefined;

/** The process's spawner, started on first use; undefined where none is to be used or it cannot be. */
export function sharedSpawner(env: NodeJS.ProcessEnv = process.env): Spawner | undefined {
  if (!isLongLived() || env.QWEX_SPAWNER === '0') return undefined;
  if (shared?.alive) return shared;
  const binary = installPath('libexec', 'qwex-spawner');
  try {
    accessSync(binary, fsConstants.X_OK);
  } catch {
    return undefined; // not built (no C compiler at install): each shim is spawned by Node
  }
  shared = new Spawner(binary);
  return shared;
}

export class Spawner {
  private readonly child: ChildProcess;
  private readonly pending = new Map<string, Pending>();
  private readonly reapedListeners = new Map<number, () => void>();
  private nextTag = 0;
  private buffered = '';
  alive = true;

  constructor(binary: string) {
    this.child = spawn(binary, [], { stdio: ['pipe', 'pipe', 'inherit'], env: {} });
    this.child.unref();
    const stdin = this.child.stdin!;
    const stdout = this.child.stdout!;
    // A write after it died fails with EPIPE: that request is answered when the pipe closes, below.
    stdin.on('error', () => {});
    (stdin as unknown as { unref?: () => void }).unref?.();
    (stdout as unknown as { unref?: () => void }).unref?.();
    stdout.setEncoding('utf8');
    stdout.on('data', (chunk: string) => this.receive(chunk));
    this.child.on('error', () => (this.alive = false));
    this.child.on('exit', () => (this.alive = false));
    // Closed once the spawner and every shim it started have let go of the pipe: whatever is still unanswered never will be.
    this.child.on('close', () => {
      this.alive = false;
      for (const [tag, p] of this.pending) {
        this.pending.delete(tag);
        p.resolve({ report: p.report, ...(p.shimPid === undefined ? {} : { shimPid: p.shimPid }), spawnerDied: true });
      }
    });
  }

  /** Starts the program of the request built for this start's tag (which the shim puts on its report line); settles with that line. */
  start(build: (tag: string) => SpawnRequest): Promise<SpawnOutcome> {
    const tag = `r${++this.nextTag}`;
    if (!this.alive) return Promise.resolve({ report: undefined, spawnerDied: true });
    const request = build(tag);
    const fields = [tag, request.builtinShim ? '' : request.file, request.cwd, request.stdoutPath, request.stderrPath, String(request.args.length + 1), request.file, ...request.args];
    for (const [name, value] of Object.entries(request.env)) fields.push(`${name}=${value}`);
    const payload = Buffer.from(`${fields.join('\0')}\0`, 'utf8');
    const header = Buffer.alloc(4);
    header.writeUInt32LE(payload.length);
    return new Promise((resolve) => {
      this.pending.set(tag, { resolve });
      this.child.stdin!.write(Buffer.concat([header, payload]));
    });
  }

  /** Calls `listener` once the spawner has reaped `shimPid` (its shim ended); returns how to stop listening. */
  onReaped(shimPid: number, listener: () => void): () => void {
    this.reapedListeners.set(shimPid, listener);
    return () => {
      if (this.reapedListeners.get(shimPid) === listener) this.reapedListeners.delete(shimPid);
    };
  }

  private receive(chunk: string): void {
    this.buffered += chunk;
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) !== -1) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      this.handle(line);
    }
  }

  private handle(line: string): void {
    const space = line.indexOf(' ');
    if (space === -1) return;
    const head = line.slice(0, space);
    const rest = line.slice(space + 1);
    if (head === 'reaped') {
      const pid = Number(rest.split(' ')[0]);
      const listener = this.reapedListeners.get(pid);
      if (listener) {
        this.reapedListeners.delete(pid);
        listener();
      }
      // A shim that ended without a word (killed before it could say one): its line would have come before this.
      for (const [tag, p] of this.pending) {
        if (p.shimPid !== pid) continue;
        this.pending.delete(tag);
        p.resolve({ report: p.report, shimPid: pid });
      }
      return;
    }
    const p = this.pending.get(head);
    if (!p) return;
    const nofork = /^nofork (\d+)$/.exec(rest);
    if (nofork) {
      // No process could be made: that is the only line this start gets.
      this.pending.delete(head);
      p.resolve({ report: { kind: 'failed', errno: Number(nofork[1]) } });
      return;
    }
    const forked = /^forked (\d+)$/.exec(rest);
    if (forked) p.shimPid = Number(forked[1]);
    else {
      p.report = parseShimReport(rest);
      p.reported = true;
    }
    // Settled once both lines are here, in either order: the child may write before its parent does.
    if (p.reported && p.shimPid !== undefined) {
      this.pending.delete(head);
      p.resolve({ report: p.report, shimPid: p.shimPid });
    }
  }
}
