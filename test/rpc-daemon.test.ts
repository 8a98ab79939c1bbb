import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { DaemonClient } from '../src/daemon-client.js';
import { newRunId } from '../src/new-run-id.js';
import { Method, Notification, PROTOCOL_VERSION, type MethodName } from '../src/protocol.js';
import { methods, notifications } from '../src/protocol-schemas.js';
import type { Job, Run } from '../src/run/model.js';
import { VERSION } from '../src/version.js';
import { FIXTURES, ROOT, isAlive, qwex, sandbox, until, type Sandbox } from './helpers.js';
import { LinePeer } from './rpc-peer.js';

/**
 * The JSON-RPC envelope, the protocol's schemas and the limits, against a
 * real qwexd over its Unix socket. The sandbox sets QWEX_FATAL_ERRORS=1: an
 * unhandled error would make qwexd exit 70, so "still alive" at the end of
 * each test means none happened.
 */
let sb: Sandbox;
let pid: number;

beforeEach(async () => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

async function startDaemon(): Promise<void> {
  const r = await qwex(sb, ['daemon', 'start', '--concurrency', '2']);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  pid = Number(readFileSync(join(sb.runtime, 'qwexd.pid'), 'utf8'));
}

/** qwexd is up, answers, and logged no unhandled error. */
async function expectStillServing(): Promise<void> {
  expect(isAlive(pid)).toBe(true);
  const client = await DaemonClient.connect(sb.socket);
  try {
    expect((await client.request(Method.status, {})).pid).toBe(pid);
  } finally {
    client.close();
  }
  expect(readFileSync(join(sb.state, 'qwexd.log'), 'utf8')).not.toMatch(/unhandled-rejection|uncaught-exception/);
}

const invalidRequest = (data: string) => ({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request', data } });
const call = (id: number | string, method: string, params?: unknown): string => JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });

function job(command: string[]): Job {
  return { command, shell: false, cwd: sb.project, env: {}, backend: 'local', backendOptions: {}, artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 100 }, killGraceMs: 2000 };
}

describe('qwexd answers the envelope as the JSON-RPC 2.0 specification says', () => {
  it('each malformed message gets exactly the spec answer; batches are arrays; notifications get nothing', async () => {
    await startDaemon();
    const peer = await LinePeer.socket(sb.socket);
    expect(await peer.ask('{"jsonrpc":"2.0","method":1}')).toEqual(invalidRequest('the "method" member must be a string, not a number'));
    expect(await peer.ask('[null]')).toEqual([invalidRequest('a request must be an object, not null')]);
    expect(await peer.ask('[1]')).toEqual([invalidRequest('a request must be an object, not a number')]);
    expect(await peer.ask('null')).toEqual(invalidRequest('a request must be an object, not null'));
    expect(await peer.ask('[]')).toEqual(invalidRequest('an empty batch'));
    expect(await peer.ask('{"jsonrpc":"2.0","id":{"n":1},"method":"daemon.status"}')).toEqual(invalidRequest('the "id" member must be a string, a number or null, not an object'));
    expect(await peer.ask('{not json')).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
    // A request and a notification: an array holding the one answer.
    expect(await peer.ask(`[${call(1, 'qwex.hello', { protocolVersion: PROTOCOL_VERSION })},{"jsonrpc":"2.0","method":"daemon.status"}]`)).toEqual([
      { jsonrpc: '2.0', id: 1, result: { protocolVersion: PROTOCOL_VERSION, daemonVersion: VERSION, pid } },
    ]);
    expect(await peer.ask(call(2, 'no.such.method'))).toEqual({ jsonrpc: '2.0', id: 2, error: { code: -32601, message: 'Method not found', data: 'no method "no.such.method"' } });
    expect(await peer.ask(call(3, 'run.get', { id: 42 }))).toEqual({
      jsonrpc: '2.0',
      id: 3,
      error: { code: -32602, message: 'invalid params for run.get: id: Invalid input: expected string, received number' },
    });
    expect(await peer.ask(call(4, 'run.get', { id: 'a'.repeat(37) }))).toMatchObject({ id: 4, error: { code: -32602, message: expect.stringMatching(/^invalid params for run.get: id: Too big/) } });
    expect(await peer.ask(call(5, 'qwex.hello', { protocolVersion: 999 }))).toEqual({
      jsonrpc: '2.0',
      id: 5,
      error: { code: -32001, message: `protocol version 999 is not supported (qwexd ${VERSION} speaks ${PROTOCOL_VERSION})`, data: { protocolVersion: PROTOCOL_VERSION, daemonVersion: VERSION } },
    });
    expect(await peer.ask(call(6, 'run.get', { id: 'ffffffff' }))).toMatchObject({ id: 6, error: { code: -32000, data: { code: 'QWEX_RUN_NOT_FOUND', message: 'no run matches "ffffffff"' } } });
    // A batch of notifications only (one of them for a method that does not exist) gets nothing: the next answer is the next request's.
    peer.send('[{"jsonrpc":"2.0","method":"daemon.status"},{"jsonrpc":"2.0","method":"nope"}]', call('after', 'qwex.hello', { protocolVersion: PROTOCOL_VERSION }));
    expect(await peer.next(1)).toMatchObject([{ id: 'after', result: { pid } }]);
    expect(peer.messages).toEqual([]);
    peer.close();
    await expectStillServing();
  });

  it('a client that ends its side right after its request (printf | socat) still gets the answer', async () => {
    await startDaemon();
    const peer = await LinePeer.socket(sb.socket);
    peer.stream.end(`${call(1, 'daemon.status')}\n`);
    expect(await peer.next(1)).toMatchObject([{ id: 1, result: { pid } }]);
    await until(() => (peer.closed ? true : undefined));
    await expectStillServing();
  });
});

describe('the protocol table is what qwexd speaks', () => {
  /** The answer has exactly the shape of the method's result schema: parsing keeps everything (z.object drops unknown keys). */
  function conforms(schema: z.ZodType, value: unknown): void {
    expect(schema.parse(value)).toEqual(value);
  }
  const result = (m: MethodName): z.ZodType => methods[m].result;

  it('every result and notification qwexd sends parses with its schema, nothing missing or extra', async () => {
    await startDaemon();
    const client = await DaemonClient.connect(sb.socket);
    try {
      const peer = await LinePeer.socket(sb.socket);
      conforms(result('qwex.hello'), ((await peer.ask(call(1, 'qwex.hello', { protocolVersion: PROTOCOL_VERSION }))) as { result: unknown }).result);
      peer.close();

      const submitted = await client.request(Method.submit, { project: sb.project, jobs: [job(['sh', '-c', 'echo out; echo err >&2'])], env: { PATH: process.env.PATH ?? '' } });
      conforms(result('run.submit'), submitted);
      const id = submitted.runs[0]!.id;
      const notes: { method: string; params: unknown }[] = [];
      const ended = new Promise<void>((resolve) =>
        client.onNotification((note) => {
          notes.push(note);
          if (note.method === Notification.logEnd) resolve();
        }),
      );
      conforms(result('logs.subscribe'), await client.request(Method.subscribe, { id }));
      await ended;
      expect(notes.map((n) => n.method)).toContain(Notification.logData);
      for (const note of notes) conforms(notifications[note.method as keyof typeof notifications], note.params);

      conforms(result('run.get'), await client.request(Method.get, { id }));
      conforms(result('run.list'), await client.request(Method.list, { project: sb.project, limit: 0 }));
      const long = (await client.request(Method.submit, { project: sb.project, jobs: [job(['sleep', '30'])], env: { PATH: process.env.PATH ?? '' } })).runs[0]!;
      await until(async () => ((await client.request(Method.get, { id: long.id })).run.status === 'running' ? true : undefined));
      conforms(result('run.list'), await client.request(Method.list, { statuses: ['running'] }));
      const sub = await client.request(Method.subscribe, { id: long.id, streams: ['stdout'] });
      conforms(result('logs.unsubscribe'), await client.request(Method.unsubscribe, { subscription: sub.subscription }));
      conforms(result('run.cancel'), await client.request(Method.cancel, { id: long.id, graceMs: 100 }));
      conforms(result('daemon.status'), await client.request(Method.status, {}));
      await expectStillServing();
      conforms(result('daemon.shutdown'), await client.request(Method.shutdown, {}));
    } finally {
      client.close();
    }
    await until(() => (isAlive(pid) ? undefined : true));
  });
});

describe('limits: qwexd answers with errors and stays up', () => {
  /** ~150 finished runs in the index, written as records and reindexed (no need to run them). */
  async function indexRuns(count: number): Promise<void> {
    const now = new Date().toISOString();
    for (let i = 0; i < count; i++) {
      const id = newRunId();
      const dir = join(sb.project, '.qwex', 'runs', id);
      mkdirSync(dir, { recursive: true });
      const run: Run = {
        version: 1, id, project: sb.project, job: job(['echo', `run ${i}`]), status: 'succeeded', createdAt: now, startedAt: now, finishedAt: now,
        exitCode: 0, signal: null, endReason: 'exit', supervisor: 'direct', backend: { name: 'local' }, metadata: { host: 'h', user: 'u', qwexVersion: VERSION },
      };
      writeFileSync(join(dir, 'run.json'), JSON.stringify(run));
    }
    const r = await qwex(sb, ['doctor', '--reindex']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
  }

  it('a batch of 10,000 run.list and a run.list of 200,000 statuses are refused with errors; qwexd stays up', async () => {
    await indexRuns(150);
    await startDaemon();
    const peer = await LinePeer.socket(sb.socket);
    const huge = `[${Array.from({ length: 10_000 }, (_, i) => call(i, 'run.list', { project: sb.project })).join(',')}]`;
    expect(huge.length).toBeGreaterThan(600_000);
    expect(await peer.ask(huge)).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'batch too large (at most 256 members, this one has 10000)' } });
    const statuses = JSON.stringify(Array.from({ length: 200_000 }, () => 'pending'));
    expect(await peer.ask(`{"jsonrpc":"2.0","id":"s","method":"run.list","params":{"statuses":${statuses}}}`)).toEqual({
      jsonrpc: '2.0',
      id: 's',
      error: { code: -32602, message: 'invalid params for run.list: statuses: Too big: expected array to have <=6 items' },
    });
    // The largest batch allowed, each member listing all 150 runs: every member answered.
    const full = (await peer.ask(`[${Array.from({ length: 256 }, (_, i) => call(i, 'run.list', { project: sb.project, limit: 0 })).join(',')}]`)) as { id: number; result: { runs: unknown[] } }[];
    expect(full.map((a) => a.id).sort((a, b) => a - b)).toEqual(Array.from({ length: 256 }, (_, i) => i));
    expect(full.every((a) => a.result.runs.length === 150)).toBe(true);
    peer.close();
    await expectStillServing();
  });

  it('10,000 run.list in batches on one connection: another client is answered while they are processed, and none is dropped', async () => {
    await indexRuns(150);
    await startDaemon();
    const busy = await LinePeer.socket(sb.socket);
    const other = await LinePeer.socket(sb.socket);
    const lines = 40;
    busy.send(...Array.from({ length: lines }, (_, l) => `[${Array.from({ length: 250 }, (_, i) => call(l * 250 + i, 'run.list', { project: sb.project, limit: 5 })).join(',')}]`));
    // The other client asks for daemon.status over and over until the busy one has every answer.
    const seen: { pending: number; seq: number }[] = [];
    let n = 0;
    while (busy.received.length < lines) {
      other.send(call(n++, 'daemon.status'));
      const [answer] = (await other.next(1, 30_000)) as { result: { pendingRequests: number } }[];
      seen.push({ pending: answer!.result.pendingRequests, seq: other.received.at(-1)!.seq });
    }
    const answers = (await busy.next(lines, 60_000)) as { id: number; result: { runs: unknown[] } }[][];
    // Answered while the busy client's requests were waiting (its own status request is the 1), before they all were.
    const lastBusy = busy.received.at(-1)!.seq;
    expect(seen.some((s) => s.pending > 1 && s.seq < lastBusy)).toBe(true);
    const ids = answers.flat().map((a) => a.id);
    expect(ids).toHaveLength(10_000);
    expect(new Set(ids).size).toBe(10_000);
    expect(answers.flat().every((a) => a.result.runs.length === 5)).toBe(true);
    busy.close();
    other.close();
    await expectStillServing();
  }, 120_000);
});

describe('qwexd and unhandled errors', () => {
  it('with QWEX_FATAL_ERRORS=1 an unhandled rejection is logged and qwexd exits 70; without it, it is logged and qwexd serves on', async () => {
    // A real qwexd, with one unhandled rejection planted through --import (the only way to make one on purpose).
    const plant = join(FIXTURES, 'unhandled-rejection.mjs');
    const qwexd = join(ROOT, 'dist', 'daemon', 'qwexd.js');
    const fatal = await execa(process.execPath, ['--import', plant, qwexd, '--foreground'], { env: { ...sb.env, QWEX_FATAL_ERRORS: '1' }, reject: false, timeout: 30_000 });
    expect(fatal.exitCode).toBe(70);
    const logged = readFileSync(join(sb.state, 'qwexd.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { level: string; event: string; message?: string; fatal?: boolean });
    expect(logged).toContainEqual(expect.objectContaining({ level: 'error', event: 'unhandled-rejection', message: 'planted by the test', fatal: true }));

    const lenient = execa(process.execPath, ['--import', plant, qwexd, '--foreground'], { env: { ...sb.env, QWEX_FATAL_ERRORS: '' }, reject: false });
    try {
      await until(() => {
        const lines = readFileSync(join(sb.state, 'qwexd.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; fatal?: boolean });
        return lines.some((l) => l.event === 'unhandled-rejection' && l.fatal === false) ? true : undefined;
      }, 20_000, 'the rejection to be logged');
      pid = await until(() => {
        try {
          return Number(readFileSync(join(sb.runtime, 'qwexd.pid'), 'utf8')) || undefined;
        } catch {
          return undefined;
        }
      });
      await expectLenientServing();
    } finally {
      lenient.kill('SIGTERM');
      await lenient;
    }
  });
});

/** Like expectStillServing, but this qwexd logged an unhandled rejection on purpose. */
async function expectLenientServing(): Promise<void> {
  expect(isAlive(pid)).toBe(true);
  const client = await DaemonClient.connect(sb.socket);
  try {
    expect((await client.request(Method.status, {})).pid).toBe(pid);
  } finally {
    client.close();
  }
}
