/**
 * JSON-RPC 2.0 messages (https://www.jsonrpc.org/specification) and the
 * checks that tell a request from a notification from something invalid.
 * No dependencies: the client loads this too.
 */
export type RequestId = string | number | null;

/** params: by-position (array) or by-name (object); absent when the method takes none. */
export interface RequestMessage {
  jsonrpc: '2.0';
  id: RequestId;
  method: string;
  params?: unknown[] | Record<string, unknown>;
}

export interface NotificationMessage {
  jsonrpc: '2.0';
  method: string;
  params?: unknown[] | Record<string, unknown>;
}

export interface ResponseError {
  code: number;
  message: string;
  data?: unknown;
}

export type ResponseMessage = { jsonrpc: '2.0'; id: RequestId; result: unknown } | { jsonrpc: '2.0'; id: RequestId; error: ResponseError };

/** The codes the specification defines (section 5.1), with its messages. */
export const ErrorCodes = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
} as const;

/** Implementation-defined server errors (section 5.1 leaves -32000 to -32099 to servers) that the rpc layer sends itself. */
export const ServerErrorCodes = {
  /** The answer would be longer than the endpoint's maxResponseBytes; `data.hint` says what to ask for instead. */
  ResponseTooLarge: -32002,
} as const;

export const ErrorMessages = {
  [ErrorCodes.ParseError]: 'Parse error',
  [ErrorCodes.InvalidRequest]: 'Invalid Request',
  [ErrorCodes.MethodNotFound]: 'Method not found',
  [ErrorCodes.InvalidParams]: 'Invalid params',
  [ErrorCodes.InternalError]: 'Internal error',
} as const;

export function errorResponse(id: RequestId, code: number, message: string, data?: unknown): ResponseMessage {
  return { jsonrpc: '2.0', id, error: data === undefined ? { code, message } : { code, message, data } };
}

export function isRequestId(value: unknown): value is RequestId {
  return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value)) || value === null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export type Classified =
  | { kind: 'request'; message: RequestMessage }
  | { kind: 'notification'; message: NotificationMessage }
  | { kind: 'invalid'; reason: string };

/**
 * What one incoming value (a whole message, or one member of a batch) is.
 * A notification is a request object without an `id` member (section 4.1);
 * `"id": null` is a request. The reason of an invalid one is for people.
 */
export function classifyRequest(value: unknown): Classified {
  if (!isObject(value)) return { kind: 'invalid', reason: `a request must be an object, not ${describe(value)}` };
  if (value.jsonrpc !== '2.0') return { kind: 'invalid', reason: 'the "jsonrpc" member must be exactly "2.0"' };
  if (typeof value.method !== 'string') return { kind: 'invalid', reason: `the "method" member must be a string, not ${describe(value.method)}` };
  if ('result' in value || 'error' in value) return { kind: 'invalid', reason: 'a request has no "result" or "error" member' };
  const params = value.params;
  if ('params' in value && (typeof params !== 'object' || params === null)) {
    return { kind: 'invalid', reason: `"params" must be an array or an object, not ${describe(params)}` };
  }
  const base = { jsonrpc: '2.0' as const, method: value.method, ...('params' in value ? { params: params as unknown[] | Record<string, unknown> } : {}) };
  if (!('id' in value)) return { kind: 'notification', message: base };
  if (!isRequestId(value.id)) return { kind: 'invalid', reason: `the "id" member must be a string, a number or null, not ${describe(value.id)}` };
  return { kind: 'request', message: { ...base, id: value.id } };
}

/** Whether a value is a response (to match to a pending request) rather than a request or notification. */
export function isResponse(value: unknown): value is ResponseMessage {
  return isObject(value) && value.jsonrpc === '2.0' && !('method' in value) && ('result' in value || isObject(value.error)) && isRequestId(value.id);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value === undefined) return 'missing';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}
