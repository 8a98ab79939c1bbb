import type { z } from 'zod';
import type { methods, notifications, resourceUsageSchema } from './protocol-schemas.js';
import { ErrorCodes, ServerErrorCodes } from './rpc/messages.js';

export type { Waiting } from './backends/types.js';

/**
 * The qwexd protocol: JSON-RPC 2.0 over a Unix socket, one message per line.
 * The method table with its schemas is src/protocol-schemas.ts; this module
 * holds the names and the types inferred from that table, and loads nothing
 * at run time (the client imports it; zod stays on the server's side).
 * docs/protocol.md describes it for other clients.
 *
 * Bump PROTOCOL_VERSION on any incompatible change; both sides check it in
 * `qwex.hello`.
 */
export const PROTOCOL_VERSION = 1;

type Methods = typeof methods;
type Notifications = typeof notifications;

export type MethodName = keyof Methods;
/** What a client sends, and what the handler gets once the params are checked (the schemas transform nothing). */
export type Params<M extends MethodName> = z.infer<Methods[M]['params']>;
export type Results<M extends MethodName> = z.infer<Methods[M]['result']>;

export type NotificationName = keyof Notifications;
export type NotificationParams<N extends NotificationName> = z.infer<Notifications[N]>;

/** The whole protocol as the rpc layer's connection types want it. */
export type QwexRequests = { [M in MethodName]: { params: Params<M>; result: Results<M> } };
export type QwexNotifications = { [N in NotificationName]: NotificationParams<N> };

/** Short names for the methods, for callers: `client.request(Method.list, {...})`. */
export const Method = {
  hello: 'qwex.hello',
  submit: 'run.submit',
  cancel: 'run.cancel',
  get: 'run.get',
  list: 'run.list',
  subscribe: 'logs.subscribe',
  unsubscribe: 'logs.unsubscribe',
  workflowSubmit: 'workflow.submit',
  workflowGet: 'workflow.get',
  workflowList: 'workflow.list',
  workflowCancel: 'workflow.cancel',
  workflowRetry: 'workflow.retry',
  status: 'daemon.status',
  shutdown: 'daemon.shutdown',
} as const satisfies Record<string, MethodName>;

/** Server-to-client notifications. */
export const Notification = {
  logData: 'logs.data',
  logEnd: 'logs.end',
} as const satisfies Record<string, NotificationName>;

// Every method and notification of the table has a short name above (a compile-time check).
const everyNameListed: [MethodName extends (typeof Method)[keyof typeof Method] ? true : false, NotificationName extends (typeof Notification)[keyof typeof Notification] ? true : false] = [true, true];
void everyNameListed;

/** Live resource use of a running run's whole process tree. */
export type ResourceUsage = z.infer<ReturnType<typeof resourceUsageSchema>>;
export type RunView = Results<'run.get'>;
export type ListedRun = Results<'run.list'>['runs'][number];
export type DaemonStatus = Results<'daemon.status'>;
export type LogDataParams = NotificationParams<'logs.data'>;
export type LogEndParams = NotificationParams<'logs.end'>;
export type LogEndReason = LogEndParams['reason'];

/** JSON-RPC error codes: the specification's, and the ones qwexd adds. */
export const RpcErrorCode = {
  ...ErrorCodes,
  /** A qwex error: `data` is `{ code, message, hint?, details? }` with qwex's stable code. */
  QwexError: -32000,
  /** The client speaks another protocol version. */
  VersionMismatch: -32001,
  /** The answer would be over the size of one message; `data.hint` says what to ask for instead. */
  ResponseTooLarge: ServerErrorCodes.ResponseTooLarge,
} as const;
