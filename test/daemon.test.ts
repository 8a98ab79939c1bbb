import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DaemonClient } from '../src/daemon-client.js';
import { newRunId } from '../src/new-run-id.js';
import { Method, Notification, type DaemonStatus, type ListedRun, type LogDataParams, type LogEndParams } from '../src/protocol.js';
import type { Job, Run } from '../src/run/model.js';
import { CLI, FIXTURES, ROOT, isAlive, qwex, qwexJson, sandbox, sleep, until, type Sandbox } from './helpers.js';

const node = process.execPath;
const fixture = (name: string): string => join(FIXTURES, name);

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

async function startDaemon(concurrency = 4): Promise<number> {
  const r = await qwex(sb, ['daemon', 'start', '--concurrency', String(concurrency)]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return Number(readFileSync(join(sb.runtime, 'qwexd.pid'), 'utf8'));
}

function record(id: string): Run {
  return JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as Run;
}

function job(command: string[], extra: Partial<Job> = {}): Job {
  return {
    command,
    shell: false,
    cwd: sb.project,
    env: {},
    backend: 'local',
    backendOptions: {},
    artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 100 },
    killGraceMs: 2000,
    ...extra,
  };
}

/** A raw socket client: send lines, read parsed lines back. */
class RawClient {
  private buffer = '';
  readonly messages: unknown[] = [];
  closed = false;
  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('utf8');
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) !== -1) {
        this.messages.push(JSON.parse(this.buffer.slice(0, nl)));
        this.buffer = this.buffer.slice(nl + 1);
      }
    });
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => {});
  }
  static open(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }
  send(text: string): void {
    this.socket.write(text);
  }
  async next(count = 1, timeoutMs = 5000): Promise<unknown[]> {
    await until(() => (this.messages.length >= count ? true : undefined), timeoutMs, `${count} message(s)`);
    return this.messages.splice(0, count);
  }
}

describe('qwexd lifecycle', () => {
  it('serves a 0700 directory and a 0600 socket, one daemon per user, and direct mode without it', async () => {
    expect((await qwex(sb, ['daemon', 'status'])).exitCode).toBe(1);
    const pid = await startDaemon();
    expect(statSync(sb.runtime).mode & 0o777).toBe(0o700);
    expect(statSync(sb.socket).mode & 0o777).toBe(0o600);
    const status = await qwexJson<DaemonStatus & { running: boolean }>(sb, ['daemon', 'status']);
    expect(status).toMatchObject({ running: true, pid, protocolVersion: 1, concurrency: 4 });

    const second = await execa(node, [join(ROOT, 'dist', 'daemon', 'qwexd.js'), '--foreground'], { env: sb.env, reject: false });
    expect(second.exitCode).toBe(14); // QWEX_DAEMON_ALREADY_RUNNING, as qwex reports it
    expect(second.stderr).toContain('qwexd is already running');
    expect(isAlive(pid)).toBe(true);

    expect((await qwex(sb, ['daemon', 'stop'])).exitCode).toBe(0);
    expect(isAlive(pid)).toBe(false);
    expect(existsSync(sb.socket)).toBe(false);
    // The socket is gone: qwex falls back to direct mode.
    const r = await qwex(sb, ['run', '--', 'echo', 'direct']);
    expect(r.exitCode).toBe(0);
    expect(String(r.stderr)).toMatch(/started \(local\)/);
  });

  it('replaces the stale socket of a daemon killed with SIGKILL', async () => {
    const pid = await startDaemon();
    process.kill(pid, 'SIGKILL');
    await until(() => (isAlive(pid) ? undefined : true));
    expect(existsSync(sb.socket)).toBe(true);
    // A dead socket means direct mode, not an error.
    expect((await qwex(sb, ['run', 'true'])).exitCode).toBe(0);
    const again = await startDaemon();
    expect(again).not.toBe(pid);
    expect((await qwex(sb, ['daemon', 'status'])).exitCode).toBe(0);
  });

  it('refuses a socket path that is too long, saying what to do', async () => {
    const long = join(sb.runtime, 'x'.repeat(120));
    const r = await execa(node, [join(ROOT, 'dist', 'daemon', 'qwexd.js'), '--foreground'], { env: { ...sb.env, QWEX_RUNTIME_DIR: long }, reject: false });
    expect(r.exitCode).toBe(15); // QWEX_SOCKET_PATH_TOO_LONG, the same status qwex gives it
    expect(r.stderr).toMatch(/bytes long; Unix sockets allow at most 10[37]/);
    expect(r.stderr).toContain('set QWEX_RUNTIME_DIR to a shorter directory');
  });

  it('SIGTERM leaves runs running, ends attachers cleanly, and the next start re-adopts them', async () => {
    const pid = await startDaemon();
    const id = String((await qwex(sb, ['run', '-d', '--', node, fixture('ticker.mjs'), '15', '100'])).stdout);
    const attacher = execa(node, [CLI, 'attach', id], { cwd: sb.project, env: sb.env, reject: false });
    let seen = '';
    attacher.stdout?.on('data', (chunk: Buffer) => (seen += chunk.toString()));
    await until(() => (seen.includes('tick 1') ? true : undefined), 10_000, 'the attacher to show output');
    process.kill(pid, 'SIGTERM');
    await until(() => (isAlive(pid) ? undefined : true));
    // The attacher carries on from the files once qwexd is gone, and sees every line once.
    const r = await attacher;
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split('\n')).toEqual(Array.from({ length: 15 }, (_, i) => `tick ${i + 1}`));
    expect(record(id)).toMatchObject({ status: 'succeeded', exitCode: 0 });
  });
});

describe('runs through qwexd', () => {
  it('foreground run, status, logs and cancel go through the daemon and behave as in direct mode', async () => {
    await startDaemon();
    const r = await qwex(sb, ['run', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(r.exitCode).toBe(3);
    expect(String(r.stdout)).toBe('out');
    expect(String(r.stderr)).toMatch(/submitted to qwexd \(local\)\nerr\n.*failed \(exit 3\)/);
    const id = readRunIds()[0]!;
    expect(record(id)).toMatchObject({ status: 'failed', exitCode: 3, supervisor: 'qwexd' });
    // The environment of the submitting shell reaches the run; env.json is private while the run waits,
    // and gone once it has started (it may hold secrets).
    const env = await qwex(sb, ['run', '-q', node, fixture('print-env.mjs')], { env: { FOO: 'from-shell' } });
    expect(JSON.parse(String(env.stdout))).toMatchObject({ FOO: 'from-shell', cwd: sb.project });
    const envFile = join(sb.project, '.qwex', 'runs', readRunIds()[1]!, 'env.json');
    expect(existsSync(envFile)).toBe(false);
    expect(readdirSync(join(sb.project, '.qwex', 'runs', readRunIds()[1]!)).join(' ')).not.toMatch(/env/);

    const pidfile = join(sb.project, 'pids.json');
    const long = String((await qwex(sb, ['run', '-d', '--', node, fixture('tree.mjs'), pidfile])).stdout);
    const pids = await until(() => (existsSync(pidfile) ? (JSON.parse(readFileSync(pidfile, 'utf8')) as { parent: number; child: number }) : undefined));
    const cancelled = await qwexJson<Run[]>(sb, ['cancel', long]);
    expect(cancelled[0]).toMatchObject({ status: 'cancelled', endReason: 'cancel' });
    await until(() => (!isAlive(pids.parent) && !isAlive(pids.child) ? true : undefined), 5000, 'the tree to die');
  });

  it('queues runs beyond the concurrency limit, starts them in order, and never starts a cancelled one', async () => {
    await startDaemon(1);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', `echo run ${i}; sleep ${i === 0 ? 3 : 0.3}`])).stdout));
    const listed = await qwexJson<ListedRun[]>(sb, ['ps']);
    const byId = new Map(listed.map((r) => [r.id, r]));
    expect(byId.get(ids[0]!)!.status).toBe('running');
    expect(ids.slice(1).map((id) => byId.get(id)!.queuePosition)).toEqual([1, 2, 3]);
    const text = String((await qwex(sb, ['ps'])).stdout);
    expect(text).toMatch(/pending #1/);
    // A queued run keeps its submitter's environment, private to this user, until it starts.
    expect(statSync(join(sb.project, '.qwex', 'runs', ids[3]!, 'env.json')).mode & 0o777).toBe(0o600);

    const c = await qwexJson<Run[]>(sb, ['cancel', ids[2]!]);
    expect(c[0]!.status).toBe('cancelled');
    expect(c[0]!.startedAt).toBeUndefined();
    const w = await qwex(sb, ['wait', ...ids]);
    expect(w.exitCode).toBe(130); // the cancelled one
    const runs = ids.map(record);
    expect(runs.map((r) => r.status)).toEqual(['succeeded', 'succeeded', 'cancelled', 'succeeded']);
    expect(readFileSync(join(sb.project, '.qwex', 'runs', ids[2]!, 'stdout.log'), 'utf8')).toBe('');
    // Submission order, one at a time: each started after the one before had finished.
    const done = [runs[0]!, runs[1]!, runs[3]!];
    for (let i = 1; i < done.length; i++) expect(Date.parse(done[i]!.startedAt!)).toBeGreaterThanOrEqual(Date.parse(done[i - 1]!.finishedAt!));
  });

  it('two attachers on one run see the same bytes in the same order', async () => {
    await startDaemon();
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'for i in $(seq 1 40); do echo "line $i"; echo "err $i" >&2; sleep 0.02; done'])).stdout);
    const attach = (): ReturnType<typeof execa> => execa(node, [CLI, 'attach', id], { cwd: sb.project, env: sb.env, reject: false });
    const [a, b] = await Promise.all([attach(), attach()]);
    expect(a.exitCode).toBe(0);
    expect(a.stdout).toBe(Array.from({ length: 40 }, (_, i) => `line ${i + 1}`).join('\n'));
    expect(b.stdout).toBe(a.stdout);
    const errLines = (s: unknown): string[] => String(s).split('\n').filter((l) => l.startsWith('err '));
    expect(errLines(a.stderr)).toHaveLength(40);
    expect(errLines(b.stderr)).toEqual(errLines(a.stderr));
  });

  it('Ctrl-C while attached detaches and leaves the run running', async () => {
    await startDaemon();
    const id = String((await qwex(sb, ['run', '-d', '--', node, fixture('ticker.mjs'), '40', '100'])).stdout);
    const attacher = execa(node, [CLI, 'attach', id], { cwd: sb.project, env: sb.env, reject: false });
    let seen = '';
    attacher.stdout?.on('data', (chunk: Buffer) => (seen += chunk.toString()));
    await until(() => (seen.includes('tick 1') ? true : undefined), 10_000, 'the attacher to show output');
    attacher.kill('SIGINT');
    const r = await attacher;
    expect(r.exitCode).toBe(130);
    expect(r.stderr).toContain(`detached; run ${id} is still running`);
    expect(record(id).status).toBe('running');
    const w = await qwex(sb, ['wait', id]);
    expect(w.exitCode).toBe(0);
  });

  it('50 clients submitting at once: no run lost or duplicated', async () => {
    await startDaemon(4);
    const clients = await Promise.all(Array.from({ length: 50 }, () => DaemonClient.connect(sb.socket)));
    try {
      const results = await Promise.all(
        clients.map((c, i) => c.request(Method.submit, { project: sb.project, jobs: [job(['sh', '-c', `echo ${i}`])], env: { PATH: process.env.PATH ?? '' } })),
      );
      const ids = results.map((r) => r.runs[0]!.id);
      expect(new Set(ids).size).toBe(50);
      await until(() => (ids.every((id) => record(id).status === 'succeeded') ? true : undefined), 60_000, 'all 50 runs to succeed');
      const outputs = ids.map((id) => readFileSync(join(sb.project, '.qwex', 'runs', id, 'stdout.log'), 'utf8'));
      expect(outputs).toEqual(Array.from({ length: 50 }, (_, i) => `${i}\n`));
      const listed = await clients[0]!.request(Method.list, { project: sb.project, limit: 0 });
      expect(listed.runs.map((r) => r.id).sort()).toEqual([...ids].sort());
    } finally {
      for (const c of clients) c.close();
    }
  }, 90_000);

  it('reports CPU and memory of running runs, and keeps the peak memory in the record', async () => {
    await startDaemon();
    const script = 'const b = Buffer.alloc(64 * 1024 * 1024, 1); setTimeout(() => console.log(b.length), 2500);';
    const id = String((await qwex(sb, ['run', '-d', '--', node, '-e', script])).stdout);
    const row = await until(async () => {
      const rows = await qwexJson<ListedRun[]>(sb, ['ps']);
      const r = rows.find((x) => x.id === id);
      return r?.usage && r.usage.rssBytes > 64 * 1024 * 1024 ? r : undefined;
    }, 10_000, 'usage to show');
    expect(row.usage!.processes).toBe(1);
    expect(String((await qwex(sb, ['ps'])).stdout)).toMatch(/CPU\s+MEM/);
    await qwex(sb, ['wait', id]);
    expect(record(id).resources!.peakRssBytes).toBeGreaterThan(64 * 1024 * 1024);
    expect(String((await qwex(sb, ['status', id])).stdout)).toMatch(/peak memory\s+\d+\.\d MB/);
    // The series over time, for plots: one sample a second while it ran, the big buffer in it.
    const series = readFileSync(join(sb.project, '.qwex', 'runs', id, 'usage.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { t: string; cpu: number; rss: number; procs: number });
    expect(series.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...series.map((p) => p.rss))).toBeGreaterThan(64 * 1024 * 1024);
    expect(series.every((p) => !Number.isNaN(Date.parse(p.t)) && p.procs >= 1)).toBe(true);
  });
});

describe('runs survive the daemon', () => {
  it('kill -9 of qwexd: runs go on, queued runs start exactly once after the restart, records are right', async () => {
    const pid = await startDaemon(1);
    const first = String((await qwex(sb, ['run', '-d', '--', node, fixture('ticker.mjs'), '30', '100'])).stdout);
    const once = join(sb.project, '..', 'once.txt');
    const queued = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', `echo once >> ${once}; echo queued; exit 6`])).stdout);
    await until(() => (record(first).status === 'running' ? true : undefined));
    process.kill(pid, 'SIGKILL');
    await until(() => (isAlive(pid) ? undefined : true));
    const log = join(sb.project, '.qwex', 'runs', first, 'stdout.log');
    const sizeAtKill = statSync(log).size;
    await until(() => (statSync(log).size > sizeAtKill ? true : undefined), 5000, 'the log to keep growing');
    // The first run ends on its own: its shim writes the exit status at once, and the next look records it.
    await until(() => (existsSync(join(sb.project, '.qwex', 'runs', first, 'exit.json')) ? true : undefined), 10_000);
    expect((await qwexJson<Run>(sb, ['status', first])).status).toBe('succeeded');
    expect(readFileSync(log, 'utf8').trim().split('\n')).toHaveLength(30);
    // The queued one waits for qwexd.
    expect(record(queued).status).toBe('pending');
    await startDaemon(1);
    const w = await qwex(sb, ['wait', queued]);
    expect(w.exitCode).toBe(6);
    expect(record(queued)).toMatchObject({ status: 'failed', exitCode: 6 });
    expect(readFileSync(join(sb.project, '..', 'once.txt'), 'utf8')).toBe('once\n');
    // A restart after that starts nothing again.
    await qwex(sb, ['daemon', 'stop']);
    await startDaemon(1);
    await sleep(500);
    expect(readFileSync(join(sb.project, '..', 'once.txt'), 'utf8')).toBe('once\n');
  });

  it('a run still going when qwexd restarts is re-adopted and its real exit code recorded', async () => {
    const pid = await startDaemon();
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'sleep 4; exit 9'])).stdout);
    await until(() => (record(id).status === 'running' ? true : undefined));
    process.kill(pid, 'SIGKILL');
    await until(() => (isAlive(pid) ? undefined : true));
    await startDaemon();
    const status = await qwexJson<{ runs: { running: number } }>(sb, ['daemon', 'status']);
    expect(status.runs.running).toBe(1);
    const r = await qwex(sb, ['attach', id]);
    expect(r.exitCode).toBe(9);
    expect(record(id)).toMatchObject({ status: 'failed', exitCode: 9 });
  });

  it('a run whose command qwexd had started just before it was killed is recorded as started then, not when adopted', async () => {
    const pid = await startDaemon();
    // The shim stops itself after writing shim.json, before it lets the command run: qwexd waits for its report.
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'sleep 0.5; exit 4'], { env: { QWEX_SHIM_TEST_STOP_BEFORE_GO: '1' } })).stdout);
    const shimFile = join(sb.project, '.qwex', 'runs', id, 'shim.json');
    const shimPid = await until(() => (existsSync(shimFile) ? (JSON.parse(readFileSync(shimFile, 'utf8')) as { shimPid: number }).shimPid : undefined));
    process.kill(pid, 'SIGKILL');
    await until(() => (isAlive(pid) ? undefined : true));
    process.kill(shimPid, 'SIGCONT'); // the command runs now, with nobody watching
    await sleep(1500);
    const restartedAt = Date.now();
    await startDaemon();
    const w = await qwex(sb, ['wait', id]);
    expect(w.exitCode).toBe(4);
    const run = record(id);
    expect(run).toMatchObject({ status: 'failed', exitCode: 4 });
    expect(Date.parse(run.startedAt!)).toBeLessThan(restartedAt);
    expect(Date.parse(run.startedAt!)).toBeGreaterThanOrEqual(Math.floor(statSync(shimFile).mtimeMs) - 1);
  });

  it('on restart, a run whose supervisor pid was recycled by another process is lost, not adopted', async () => {
    // The claim names a live process (this test runner) as its supervisor, with another start time.
    const id = newRunId();
    const dir = join(sb.project, '.qwex', 'runs', id);
    mkdirSync(dir, { recursive: true });
    const run: Run = {
      version: 1, id, project: sb.project, job: job(['sleep', '100']), status: 'running', createdAt: new Date().toISOString(),
      startedAt: new Date().toISOString(), exitCode: null, signal: null, supervisor: 'qwexd',
      backend: { name: 'local', pid: 999_999, pgid: 999_999 },
      metadata: { host: 'h', user: 'u', qwexVersion: '0' },
    };
    writeFileSync(join(dir, 'run.json'), JSON.stringify(run));
    writeFileSync(join(dir, 'claim.json'), JSON.stringify({ pid: process.pid, startTime: '1', intent: 'supervise', at: '' }));
    await qwex(sb, ['doctor', '--reindex']);
    await startDaemon();
    await until(() => (record(id).status === 'lost' ? true : undefined), 5000);
    expect(record(id).error!.message).toMatch(/is lost: it was started without a shim, by a process that is gone/);
  });
});

describe('bad input over the socket', () => {
  it('answers each malformed request with the right JSON-RPC error and carries on', async () => {
    await startDaemon();
    const c = await RawClient.open(sb.socket);
    const ask = async (line: string): Promise<unknown> => {
      c.send(`${line}\n`);
      return (await c.next(1))[0];
    };
    expect(await ask('{not json')).toMatchObject({ id: null, error: { code: -32700 } });
    expect(await ask('42')).toMatchObject({ id: null, error: { code: -32600 } });
    expect(await ask('[]')).toMatchObject({ id: null, error: { code: -32600 } });
    expect(await ask('{"jsonrpc":"2.0","id":1,"method":"no.such.method"}')).toMatchObject({ id: 1, error: { code: -32601 } });
    expect(await ask('{"jsonrpc":"2.0","id":2,"method":"run.get","params":{"id":42}}')).toMatchObject({ id: 2, error: { code: -32602 } });
    expect(await ask('{"jsonrpc":"2.0","id":3,"method":"run.submit","params":{"project":"/p","jobs":[],"env":{}}}')).toMatchObject({ id: 3, error: { code: -32602 } });
    // A qwex error keeps its stable code in data.
    expect(await ask('{"jsonrpc":"2.0","id":4,"method":"run.get","params":{"id":"ffffffff"}}')).toMatchObject({
      id: 4, error: { code: -32000, data: { code: 'QWEX_RUN_NOT_FOUND' } },
    });
    // A batch mixing valid and invalid members: each answered on its own.
    const batch = (await ask('[{"jsonrpc":"2.0","id":5,"method":"daemon.status"},{"foo":1},{"jsonrpc":"2.0","id":6,"method":"nope"},{"jsonrpc":"2.0","method":"daemon.status"}]')) as { id: unknown; error?: { code: number }; result?: unknown }[];
    expect(batch).toHaveLength(3); // the notification gets no answer
    expect(batch.find((m) => m.id === 5)!.result).toMatchObject({ pid: expect.any(Number) });
    expect(batch.find((m) => m.id === null)!.error!.code).toBe(-32600);
    expect(batch.find((m) => m.id === 6)!.error!.code).toBe(-32601);
    // A client with another protocol version is told so.
    expect(await ask('{"jsonrpc":"2.0","id":7,"method":"qwex.hello","params":{"protocolVersion":999}}')).toMatchObject({ id: 7, error: { code: -32001 } });
    c.socket.destroy();
  });

  it('closes a connection whose line is over the size limit; other clients are not affected', async () => {
    await startDaemon();
    const big = await RawClient.open(sb.socket);
    const other = await DaemonClient.connect(sb.socket);
    big.send(`{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":{"pad":"${'x'.repeat(5 * 1024 * 1024)}"}}\n`);
    const [answer] = await big.next(1);
    expect(answer).toMatchObject({ id: null, error: { code: -32600, message: expect.stringMatching(/longer than/) } });
    await until(() => (big.closed ? true : undefined));
    expect((await other.request(Method.status, {})).pid).toBeGreaterThan(0);
    other.close();
  });

  it('a client that disconnects mid-stream or never reads does not hurt the daemon', async () => {
    const pid = await startDaemon();
    const size = 150 * 1024 * 1024;
    const id = String((await qwex(sb, ['run', '-d', '--', node, fixture('flood.mjs'), String(size)])).stdout);
    const rssOf = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
    const before = rssOf();

    // One subscribes and never reads; one subscribes, reads a little, and hangs up.
    const lazy = await RawClient.open(sb.socket);
    lazy.socket.pause();
    lazy.send(`{"jsonrpc":"2.0","id":1,"method":"logs.subscribe","params":{"id":"${id}"}}\n`);
    const quitter = await DaemonClient.connect(sb.socket);
    let got = 0;
    quitter.onNotification((n) => {
      if (n.method === Notification.logData) got += Buffer.from((n.params as LogDataParams).data, 'base64').length;
    });
    await quitter.request(Method.subscribe, { id });
    await until(() => (got > 0 ? true : undefined));
    quitter.close();

    await until(() => (record(id).status === 'succeeded' ? true : undefined), 60_000);
    await sleep(500);
    // 150 MB went by; the daemon holds at most a bounded buffer for the client that does not read.
    expect(rssOf() - before).toBeLessThan(80 * 1024 * 1024);
    const fresh = await DaemonClient.connect(sb.socket);
    const status = await fresh.request(Method.status, {});
    expect(status.connections).toBe(2); // the lazy one and this one; the quitter is gone
    fresh.close();
    lazy.socket.destroy();
  }, 90_000);

  it('a subscriber gets data with byte offsets, then an end with the final record', async () => {
    await startDaemon();
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'printf abc; sleep 0.2; printf def; exit 2'])).stdout);
    const client = await DaemonClient.connect(sb.socket);
    const data: LogDataParams[] = [];
    const ended = new Promise<LogEndParams>((resolve) =>
      client.onNotification((n) => {
        if (n.method === Notification.logData) data.push(n.params as LogDataParams);
        if (n.method === Notification.logEnd) resolve(n.params as LogEndParams);
      }),
    );
    await client.request(Method.subscribe, { id, streams: ['stdout'] });
    const end = await ended;
    client.close();
    expect(end).toMatchObject({ runId: id, reason: 'run-ended', run: { status: 'failed', exitCode: 2 } });
    const joined = Buffer.concat(data.map((d) => Buffer.from(d.data, 'base64'))).toString();
    expect(joined).toBe('abcdef');
    let expected = 0;
    for (const d of data) {
      expect(d.offset).toBe(expected);
      expected += Buffer.from(d.data, 'base64').length;
    }
  });
});

function readRunIds(): string[] {
  // Ids are UUIDv7, so sorted names are in submission order.
  return readdirSync(join(sb.project, '.qwex', 'runs')).sort();
}
