import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { bindHandlers, RpcEndpoint, type EndpointConnection } from '../src/rpc/endpoint.js';
import { ndjsonTransport } from '../src/rpc/ndjson.js';
import { memoryDuplexPair } from './memory-duplex.js';
import { asSet, LinePeer } from './rpc-peer.js';

/**
 * Section 7 of the JSON-RPC 2.0 specification (https://www.jsonrpc.org/specification),
 * every example, against the endpoint over an in-memory stream pair with the
 * spec's methods. Each answer is checked whole: the spec's answer, member for
 * member, plus the `data` member qwex adds to say why a request was invalid
 * or which method was not found (section 5.1 allows it; docs/protocol.md).
 * `foobar` is registered as a notification only: the spec sends it as a
 * notification (no answer) and as a call of a method that does not exist
 * (-32601).
 */
const spec = {
  subtract: {
    params: z.union([z.tuple([z.number(), z.number()]), z.strictObject({ minuend: z.number(), subtrahend: z.number() })]),
    result: z.number(),
  },
  sum: { params: z.array(z.number()), result: z.number() },
  get_data: { params: z.union([z.undefined(), z.tuple([])]), result: z.tuple([z.string(), z.number()]) },
};

const numbers = z.array(z.number());

let peer: LinePeer;
let served: EndpointConnection;
let notified: { method: string; params: unknown }[];

beforeEach(() => {
  notified = [];
  const record = (method: string) => ({
    params: z.unknown(),
    handler: (params: unknown) => {
      notified.push({ method, params });
    },
  });
  const endpoint = new RpcEndpoint<undefined>({
    requests: bindHandlers(spec, {
      subtract: (p) => (Array.isArray(p) ? p[0] - p[1] : p.minuend - p.subtrahend),
      sum: (p) => p.reduce((a, b) => a + b, 0),
      get_data: (): [string, number] => ['hello', 5],
    }),
    notifications: {
      update: { ...record('update'), params: numbers },
      notify_hello: { ...record('notify_hello'), params: numbers },
      notify_sum: { ...record('notify_sum'), params: numbers },
      foobar: { ...record('foobar'), params: z.undefined() },
    },
  });
  const [server, client] = memoryDuplexPair();
  served = endpoint.serve(ndjsonTransport(server), () => undefined);
  peer = new LinePeer(client);
});

afterEach(() => served.dispose());

/**
 * What the spec says gets no answer must get none: a request sent after it
 * must be the next (and only) thing that comes back. Members start in order,
 * so an answer to the first would come no later than the second's.
 */
async function expectNoAnswer(line: string): Promise<void> {
  peer.send(line, '{"jsonrpc":"2.0","method":"sum","params":[0],"id":"after"}');
  expect(await peer.next(1)).toEqual([{ jsonrpc: '2.0', result: 0, id: 'after' }]);
  expect(peer.messages).toEqual([]);
}

const invalidRequest = (data: string) => ({ jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request', data }, id: null });

describe('JSON-RPC 2.0 specification, section 7', () => {
  it('rpc call with positional parameters', async () => {
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}')).toEqual({ jsonrpc: '2.0', result: 19, id: 1 });
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}')).toEqual({ jsonrpc: '2.0', result: -19, id: 2 });
  });

  it('rpc call with named parameters', async () => {
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}')).toEqual({ jsonrpc: '2.0', result: 19, id: 3 });
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}')).toEqual({ jsonrpc: '2.0', result: 19, id: 4 });
  });

  it('a Notification', async () => {
    await expectNoAnswer('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}');
    await expectNoAnswer('{"jsonrpc": "2.0", "method": "foobar"}');
    expect(notified).toEqual([
      { method: 'update', params: [1, 2, 3, 4, 5] },
      { method: 'foobar', params: undefined },
    ]);
  });

  it('rpc call of non-existent method', async () => {
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')).toEqual({
      jsonrpc: '2.0',
      error: { code: -32601, message: 'Method not found', data: 'no method "foobar"' },
      id: '1',
    });
  });

  it('rpc call with invalid JSON', async () => {
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')).toEqual({
      jsonrpc: '2.0',
      error: { code: -32700, message: 'Parse error' },
      id: null,
    });
  });

  it('rpc call with invalid Request object', async () => {
    expect(await peer.ask('{"jsonrpc": "2.0", "method": 1, "params": "bar"}')).toEqual(invalidRequest('the "method" member must be a string, not a number'));
  });

  it('rpc call Batch, invalid JSON', async () => {
    expect(await peer.ask('[ {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method" ]')).toEqual({
      jsonrpc: '2.0',
      error: { code: -32700, message: 'Parse error' },
      id: null,
    });
  });

  it('rpc call with an empty Array', async () => {
    expect(await peer.ask('[]')).toEqual(invalidRequest('an empty batch'));
  });

  it('rpc call with an invalid Batch (but not empty)', async () => {
    expect(await peer.ask('[1]')).toEqual([invalidRequest('a request must be an object, not a number')]);
  });

  it('rpc call with invalid Batch', async () => {
    expect(await peer.ask('[1,2,3]')).toEqual([1, 2, 3].map(() => invalidRequest('a request must be an object, not a number')));
  });

  it('rpc call Batch', async () => {
    const answer = await peer.ask(
      `[${[
        '{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}',
        '{"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}',
        '{"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"}',
        '{"foo": "boo"}',
        '{"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"}',
        '{"jsonrpc": "2.0", "method": "get_data", "id": "9"}',
      ].join(',')}]`,
    );
    expect(asSet(answer)).toEqual(
      asSet([
        { jsonrpc: '2.0', result: 7, id: '1' },
        { jsonrpc: '2.0', result: 19, id: '2' },
        invalidRequest('the "jsonrpc" member must be exactly "2.0"'),
        { jsonrpc: '2.0', error: { code: -32601, message: 'Method not found', data: 'no method "foo.get"' }, id: '5' },
        { jsonrpc: '2.0', result: ['hello', 5], id: '9' },
      ]),
    );
    expect(notified).toEqual([{ method: 'notify_hello', params: [7] }]);
  });

  it('rpc call Batch (all notifications)', async () => {
    await expectNoAnswer('[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]');
    expect(notified).toEqual([
      { method: 'notify_sum', params: [1, 2, 4] },
      { method: 'notify_hello', params: [7] },
    ]);
  });
});

describe('the rest of the specification', () => {
  it('an id must be a string, a number or null; "id": null is a request, not a notification', async () => {
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "sum", "params": [1], "id": {"a": 1}}')).toEqual(
      invalidRequest('the "id" member must be a string, a number or null, not an object'),
    );
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "sum", "params": [1], "id": [1]}')).toEqual(invalidRequest('the "id" member must be a string, a number or null, not an array'));
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "sum", "params": [1], "id": null}')).toEqual({ jsonrpc: '2.0', result: 1, id: null });
  });

  it('not an object or array, null, and a batch of null are invalid requests answered with id null', async () => {
    expect(await peer.ask('null')).toEqual(invalidRequest('a request must be an object, not null'));
    expect(await peer.ask('"sum"')).toEqual(invalidRequest('a request must be an object, not a string'));
    expect(await peer.ask('[null]')).toEqual([invalidRequest('a request must be an object, not null')]);
    // An invalid member without an id is still answered: only a valid notification goes unanswered.
    expect(await peer.ask('{"jsonrpc": "2.0", "method": 1}')).toEqual(invalidRequest('the "method" member must be a string, not a number'));
    expect(await peer.ask('{"jsonrpc": "1.0", "method": "sum", "params": [1], "id": 1}')).toEqual(invalidRequest('the "jsonrpc" member must be exactly "2.0"'));
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "sum", "params": 5, "id": 1}')).toEqual(invalidRequest('"params" must be an array or an object, not a number'));
  });

  it('a batch of one request and one notification is answered with an array of one', async () => {
    expect(await peer.ask('[{"jsonrpc": "2.0", "method": "sum", "params": [2, 3], "id": 7}, {"jsonrpc": "2.0", "method": "update", "params": [1]}]')).toEqual([
      { jsonrpc: '2.0', result: 5, id: 7 },
    ]);
  });

  it('invalid params are -32602, naming the offending key; a notification with invalid params gets no answer', async () => {
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 1, "subtrahend": "x"}, "id": 1}')).toMatchObject({
      jsonrpc: '2.0',
      id: 1,
      error: { code: -32602, message: expect.stringMatching(/^invalid params for subtract: /) },
    });
    expect(await peer.ask('{"jsonrpc": "2.0", "method": "sum", "params": [1, "two"], "id": 2}')).toEqual({
      jsonrpc: '2.0',
      id: 2,
      error: { code: -32602, message: 'invalid params for sum: 1: Invalid input: expected number, received string' },
    });
    await expectNoAnswer('{"jsonrpc": "2.0", "method": "update", "params": ["x"]}');
    expect(notified).toEqual([]);
  });
});
