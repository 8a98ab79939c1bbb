import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { bindHandlers, RpcEndpoint, type EndpointConnection, type Limits } from '../src/rpc/endpoint.js';
import { ndjsonTransport } from '../src/rpc/ndjson.js';
import { until, sleep } from './helpers.js';
import { memoryDuplexPair } from './memory-duplex.js';
import { LinePeer } from './rpc-peer.js';

/**
 * The endpoint's limits, over in-memory stream pairs: each is answered with
 * an error (or waited out), none ends the process or drops a request. The
 * limits are set small here so that hitting them is cheap; qwexd's own, over
 * its socket, are in rpc-daemon.test.ts.
 */
const table = {
  echo: { params: z.tuple([z.string()]), result: z.string() },
  /** Waits until the test opens its gate. */
  gate: { params: z.tuple([z.number()]), result: z.number() },
  /** Counts its calls: how far a batch has got. */
  count: { params: z.undefined(), result: z.number() },
  /** Answers with what it is told to, even what JSON cannot hold. */
  bad: { params: z.tuple([z.enum(['cycle', 'bigint', 'throw-string', 'throw-error'])]), result: z.unknown() },
};

let gates = new Map<number, () => void>();
let started: number[] = [];
let counted = 0;
let onFirstCount: () => void = () => {};
/** `counted` at each echo: how far a batch of counts had got when another request was handled. */
let countedAtEcho: number[] = [];
const connections: EndpointConnection[] = [];
const logged: { level: string; event: string }[] = [];

function serve(limits: Partial<Limits> = {}): { endpoint: RpcEndpoint<undefined>; connect: () => LinePeer } {
  const endpoint = new RpcEndpoint<undefined>(
    {
      requests: bindHandlers(table, {
        echo: ([text]) => {
          countedAtEcho.push(counted);
          return text;
        },
        gate: ([n]) => {
          started.push(n);
          return new Promise<number>((resolve) => gates.set(n, () => resolve(n)));
        },
        count: () => {
          if (++counted === 1) onFirstCount();
          return counted;
        },
        bad: ([kind]) => {
          if (kind === 'cycle') {
            const o: Record<string, unknown> = {};
            o.self = o;
            return o;
          }
          if (kind === 'bigint') return { n: 10n };
          // What a careless handler might do.
          if (kind === 'throw-string') throw 'a string';
          throw new Error('a bug');
        },
      }),
    },
    { limits, log: (level, event) => logged.push({ level, event }) },
  );
  return {
    endpoint,
    connect: () => {
      const [server, client] = memoryDuplexPair();
      connections.push(endpoint.serve(ndjsonTransport(server), () => undefined));
      return new LinePeer(client);
    },
  };
}

afterEach(() => {
  for (const c of connections.splice(0)) c.dispose();
  gates = new Map();
  started = [];
  counted = 0;
  onFirstCount = () => {};
  countedAtEcho = [];
  logged.length = 0;
});

const call = (id: number | string, method: string, params?: unknown): string => JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });

describe('rpc endpoint limits', () => {
  it('a batch over the member limit is answered with one -32600 saying the limit; the connection goes on', async () => {
    const peer = serve({ maxBatchMembers: 4 }).connect();
    const five = `[${Array.from({ length: 5 }, (_, i) => call(i, 'echo', ['x'])).join(',')}]`;
    expect(await peer.ask(five)).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'batch too large (at most 4 members, this one has 5)' } });
    const four = `[${Array.from({ length: 4 }, (_, i) => call(i, 'echo', [`m${i}`])).join(',')}]`;
    expect(((await peer.ask(four)) as { result: string }[]).map((a) => a.result).sort()).toEqual(['m0', 'm1', 'm2', 'm3']);
  });

  it('an answer over the size limit becomes an error saying what to ask for instead; in a batch, the member that does not fit', async () => {
    const peer = serve({ maxResponseBytes: 1000 }).connect();
    expect(await peer.ask(call(1, 'echo', ['x'.repeat(2000)]))).toEqual({
      jsonrpc: '2.0',
      id: 1,
      error: {
        code: -32002,
        message: 'the answer to echo is 2036 bytes, over the 1000 bytes one message may hold; ask for less',
        data: { limit: 1000, bytes: 2036, hint: 'ask for less' },
      },
    });
    // Each alone fits; together they do not: the second is told to come on its own.
    const answer = (await peer.ask(`[${call('a', 'echo', ['a'.repeat(600)])},${call('b', 'echo', ['b'.repeat(600)])}]`)) as { id: string; result?: string; error?: { code: number; data: { hint: string } } }[];
    expect(answer.map((a) => a.id)).toEqual(['a', 'b']);
    expect(answer[0]!.result).toBe('a'.repeat(600));
    expect(answer[1]!.error).toMatchObject({ code: -32002, data: { hint: 'send this request on its own or in a smaller batch' } });
    expect(JSON.stringify(answer).length).toBeLessThanOrEqual(1000);
    expect(logged).toContainEqual({ level: 'warn', event: 'rpc-response-too-large' });
  });

  it('requests beyond the in-flight limit wait, and every one is answered', async () => {
    const peer = serve({ maxInFlight: 2 }).connect();
    peer.send(...[1, 2, 3, 4, 5].map((n) => call(n, 'gate', [n])));
    await until(() => (started.length === 2 ? true : undefined));
    // Nothing else starts while both slots are held (a bounded look: showing something does not happen).
    await sleep(200);
    expect(started).toEqual([1, 2]);
    for (let n = 1; n <= 5; n++) {
      await until(() => gates.get(n), 5000, `request ${n} to start`);
      gates.get(n)!();
    }
    const answers = (await peer.next(5)) as { id: number; result: number }[];
    expect(answers.map((a) => a.result).sort()).toEqual([1, 2, 3, 4, 5]);
    expect(started).toEqual([1, 2, 3, 4, 5]);
  });

  it('a long batch takes turns with other connections: another client is answered while it is still being processed', async () => {
    const { connect } = serve();
    const busy = connect();
    const other = connect();
    // The other client asks once the batch's first member has run (255 are still to go), on a later turn of the
    // event loop, as bytes from a socket would come: only a batch that yields lets it in before it is done.
    onFirstCount = () => setImmediate(() => other.send(call('other', 'echo', ['still here'])));
    busy.send(`[${Array.from({ length: 256 }, (_, i) => call(i, 'count')).join(',')}]`);
    const [answer] = await other.next(1);
    const [batch] = (await busy.next(1)) as unknown[][];
    expect(answer).toEqual({ jsonrpc: '2.0', id: 'other', result: 'still here' });
    expect(batch).toHaveLength(256);
    // Handled mid-batch, and answered before the batch was.
    expect(countedAtEcho).toHaveLength(1);
    expect(countedAtEcho[0]).toBeLessThan(256);
    expect(other.received[0]!.seq).toBeLessThan(busy.received[0]!.seq);
  });

  it('a handler that throws anything, or returns what JSON cannot hold, is answered -32603 and logged; the endpoint goes on', async () => {
    const peer = serve().connect();
    for (const kind of ['cycle', 'bigint', 'throw-string', 'throw-error']) {
      expect(await peer.ask(call(kind, 'bad', [kind]))).toMatchObject({ jsonrpc: '2.0', id: kind, error: { code: -32603, message: 'Internal error', data: expect.any(String) } });
    }
    expect(logged.filter((l) => l.event === 'rpc-handler-error')).toHaveLength(4);
    expect(await peer.ask(call(9, 'echo', ['ok']))).toEqual({ jsonrpc: '2.0', id: 9, result: 'ok' });
  });

  it('a line over the length limit is answered -32600 and the connection closed, after what came before it is answered', async () => {
    const { endpoint } = serve();
    const [server, client] = memoryDuplexPair();
    connections.push(endpoint.serve(ndjsonTransport(server, { maxLineBytes: 100 }), () => undefined));
    const peer = new LinePeer(client);
    peer.send(call(1, 'gate', [1]));
    peer.send(call(2, 'echo', ['y'.repeat(200)]));
    const [tooLong] = await peer.next(1);
    expect(tooLong).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'message longer than 100 bytes' } });
    expect(peer.closed).toBe(false);
    await until(() => gates.get(1));
    gates.get(1)!();
    expect(await peer.next(1)).toEqual([{ jsonrpc: '2.0', id: 1, result: 1 }]);
    await until(() => (peer.closed ? true : undefined));
  });

  it('a peer that ends its side after its last request still gets every answer, then the connection closes', async () => {
    const peer = serve().connect();
    peer.stream.end(`${call(1, 'echo', ['a'])}\n${call(2, 'echo', ['b'])}\n`);
    const answers = (await peer.next(2)) as { result: string }[];
    expect(answers.map((a) => a.result).sort()).toEqual(['a', 'b']);
    await until(() => (peer.closed ? true : undefined));
  });
});
