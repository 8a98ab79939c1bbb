import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import { DaemonClient } from '../src/daemon-client.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import { Method, Notification, PROTOCOL_VERSION, type LogDataParams, type LogEndParams, type QwexNotifications } from '../src/protocol.js';
import { methods } from '../src/protocol-schemas.js';
import { ConnectionClosedError, ConnectionDisposedError, RpcConnection } from '../src/rpc/connection.js';
import { RpcEndpoint, type EndpointConnection, type RequestSpec } from '../src/rpc/endpoint.js';
import { ndjsonTransport } from '../src/rpc/ndjson.js';
import type { Run } from '../src/run/model.js';
import { until } from './helpers.js';
import { memoryDuplexPair } from './memory-duplex.js';
import { LinePeer } from './rpc-peer.js';

/**
 * The client (DaemonClient over RpcConnection) over an in-memory stream pair.
 * The server side is a FAKE qwexd: the real endpoint with the real schemas,
 * and stand-in handlers for the few methods these tests call, so that the
 * client's own behaviour (disposal, notifications, limits) is what is tested.
 * The client against the real qwexd is in rpc-daemon.test.ts and daemon.test.ts.
 */
type Fake = EndpointConnection<QwexNotifications>;

const run = { id: '019a0000-0000-7000-8000-000000000000', status: 'succeeded' } as Run;
const served: Fake[] = [];
let releaseGet: (() => void) | undefined;

function fakeQwexd(): { stream: ReturnType<typeof memoryDuplexPair>[1]; server: () => Fake } {
  const spec = <M extends keyof typeof methods>(method: M, handler: RequestSpec<unknown, unknown, Fake>['handler']): RequestSpec<unknown, unknown, Fake> => ({
    params: methods[method].params,
    handler,
  });
  const endpoint = new RpcEndpoint<Fake, QwexNotifications>({
    requests: {
      'qwex.hello': spec('qwex.hello', () => ({ protocolVersion: PROTOCOL_VERSION, daemonVersion: 'fake', pid: 1 })),
      // Answers only when the test says so.
      'run.get': spec('run.get', () => new Promise((resolve) => (releaseGet = () => resolve({ run, dir: '/d' })))),
      'logs.subscribe': spec('logs.subscribe', (_params, connection) => {
        setImmediate(() => {
          void connection.notify(Notification.logData, { subscription: 's', runId: run.id, stream: 'stdout', offset: 0, data: 'aGk=' });
          void connection.notify(Notification.logData, { subscription: 's', runId: run.id, stream: 'stderr', offset: 0, data: 'eW8=' });
          void connection.notify(Notification.logEnd, { subscription: 's', runId: run.id, reason: 'run-ended', run });
        });
        return { subscription: 's', runId: run.id };
      }),
    },
  });
  const [server, client] = memoryDuplexPair();
  let connection!: Fake;
  endpoint.serve(ndjsonTransport(server), (c) => (connection = c));
  served.push(connection);
  return { stream: client, server: () => connection };
}

afterEach(() => {
  for (const c of served.splice(0)) c.dispose();
  releaseGet = undefined;
});

describe('the qwexd client over an in-memory stream', () => {
  it('close() rejects pending requests with ConnectionDisposedError, a QWEX_DAEMON_UNAVAILABLE error; later requests too', async () => {
    const client = await DaemonClient.over(fakeQwexd().stream);
    expect(client.daemonVersion).toBe('fake');
    const pending = client.request(Method.get, { id: 'abc' });
    await until(() => releaseGet);
    const closed = new Promise<ConnectionClosedError>((resolve) => client.onClose(resolve));
    client.close();
    const error = await pending.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionDisposedError);
    expect(error).toBeInstanceOf(QwexError);
    expect((error as QwexError).code).toBe(ErrorCode.DaemonUnavailable);
    expect((error as Error).name).toBe('ConnectionDisposedError');
    expect(await closed).toBe(error);
    // The answer coming after all is ignored; a new request fails at once.
    releaseGet!();
    await expect(client.request(Method.get, { id: 'abc' })).rejects.toBeInstanceOf(ConnectionDisposedError);
  });

  it('notifications arrive typed, to a listener of one method and to one of all; a disposed listener gets no more', async () => {
    const client = await DaemonClient.over(fakeQwexd().stream);
    const data: LogDataParams[] = [];
    const all: string[] = [];
    const onData = client.onNotification(Notification.logData, (params) => {
      expectTypeOf(params).toEqualTypeOf<LogDataParams>();
      data.push(params);
      onData.dispose(); // only the first
    });
    const ended = new Promise<LogEndParams>((resolve) =>
      client.onNotification((note) => {
        all.push(note.method);
        if (note.method === Notification.logEnd) {
          expectTypeOf(note.params).toEqualTypeOf<LogEndParams>();
          resolve(note.params);
        }
      }),
    );
    expect(await client.request(Method.subscribe, { id: run.id })).toEqual({ subscription: 's', runId: run.id });
    expect(await ended).toMatchObject({ reason: 'run-ended', run: { status: 'succeeded' } });
    expect(data).toEqual([{ subscription: 's', runId: run.id, stream: 'stdout', offset: 0, data: 'aGk=' }]);
    expect(all).toEqual(['logs.data', 'logs.data', 'logs.end']);
    client.close();
  });

  it('a line from the server over the length limit closes the connection with an error that says so', async () => {
    const { stream, server } = fakeQwexd();
    const client = await DaemonClient.over(stream);
    const pending = client.request(Method.get, { id: 'abc' });
    await until(() => releaseGet);
    const closed = new Promise<ConnectionClosedError>((resolve) => client.onClose(resolve));
    void server().notify(Notification.logData, { subscription: 's', runId: run.id, stream: 'stdout', offset: 0, data: 'x'.repeat(5 * 1024 * 1024) });
    const error = await pending.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect(error).not.toBeInstanceOf(ConnectionDisposedError);
    expect((error as QwexError).code).toBe(ErrorCode.DaemonUnavailable);
    expect((error as Error).message).toBe('qwexd sent a message longer than 4194304 bytes');
    expect(await closed).toBe(error);
    // The client has let go of the stream: the server's answer, when it comes, finds it closed.
    releaseGet!();
    await until(() => (server().closed ? true : undefined));
  });

  it('a request longer than the server reads is refused here, and the connection goes on', async () => {
    const client = await DaemonClient.over(fakeQwexd().stream);
    const error = await client.request(Method.get, { id: 'x'.repeat(5 * 1024 * 1024) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QwexError);
    expect((error as QwexError).code).toBe(ErrorCode.Usage);
    expect((error as Error).message).toMatch(/^the run.get request is \d+ bytes, over the 4194304 bytes one message to qwexd may hold$/);
    const again = client.request(Method.get, { id: 'abc' });
    await until(() => releaseGet);
    releaseGet!();
    expect(await again).toEqual({ run, dir: '/d' });
    client.close();
  });

  it('the peer closing fails what is pending with ConnectionClosedError and its hint', async () => {
    const { stream, server } = fakeQwexd();
    const client = await DaemonClient.over(stream);
    const pending = client.request(Method.get, { id: 'abc' });
    await until(() => releaseGet);
    server().dispose();
    const error = (await pending.catch((e: unknown) => e)) as QwexError;
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect(error.message).toBe('qwexd closed the connection');
    expect(error.hint).toMatch(/qwex daemon status/);
  });

  it('a request from the server is answered -32601: this side serves no methods', async () => {
    const [a, b] = memoryDuplexPair();
    const connection = new RpcConnection<Record<never, never>, Record<never, never>>(ndjsonTransport(a));
    const server = new LinePeer(b);
    expect(await server.ask('{"jsonrpc":"2.0","id":1,"method":"client.thing"}')).toEqual({
      jsonrpc: '2.0',
      id: 1,
      error: { code: -32601, message: 'Method not found', data: 'no method "client.thing" on this side' },
    });
    connection.dispose();
  });
});
