import type * as z from 'zod/v4/core';
import type { ResponseError } from './messages.js';

/**
 * What an endpoint serves: the method table (params schemas and handlers),
 * the errors a handler may throw, and the limits that protect the server.
 * Kept apart from the endpoint's machinery (endpoint.ts).
 */

/** Limits that protect the server; each is answered with an error, never by exiting. */
export interface Limits {
  /** Members of one batch; a longer batch is answered with one -32600. */
  maxBatchMembers: number;
  /** Bytes of one answer line; a larger result becomes an error for its member. */
  maxResponseBytes: number;
  /** Handlers running at once for one connection; more wait (reading from the peer pauses), none is dropped. */
  maxInFlight: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxBatchMembers: 256,
  maxResponseBytes: 32 * 1024 * 1024,
  maxInFlight: 32,
};

/** A handler throws this to answer with exactly this JSON-RPC error. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'RpcError';
  }

  toJSON(): ResponseError {
    return this.data === undefined ? { code: this.code, message: this.message } : { code: this.code, message: this.message, data: this.data };
  }
}

/** What checks a request's params: a zod schema (classic or zod/mini), or anything with its safeParse. */
export interface ParamsCheck<P = unknown> {
  safeParse(value: unknown): { success: true; data: P } | { success: false; error: z.$ZodError };
}

export interface RequestSpec<P, R, C> {
  /** Checks the params; a failure is answered with -32602 naming the offending key. */
  params: ParamsCheck<P>;
  handler: (params: P, context: C) => R | Promise<R>;
  /** What to ask for instead when the answer is over the size limit (e.g. "a smaller `limit`"). */
  whenTooLarge?: string;
}

export interface NotificationSpec<P, C> {
  params: ParamsCheck<P>;
  handler: (params: P, context: C) => void | Promise<void>;
}

export interface MethodTable<C> {
  // `any`: each entry has its own params type; bindHandlers and the handlers' own signatures keep them apart.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  requests: Record<string, RequestSpec<any, unknown, C>>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  notifications?: Record<string, NotificationSpec<any, C>>;
}

/** A table of schemas: per method, its params and result (the result's schema is for types and tests). */
export type SchemaTable = Record<string, { readonly params: z.$ZodType & ParamsCheck; readonly result: z.$ZodType; readonly whenTooLarge?: string }>;

/** One handler per method of a schema table, typed by its schemas: nothing else is reachable. */
export type HandlersOf<T extends SchemaTable, C> = {
  [M in keyof T]: (params: z.output<T[M]['params']>, context: C) => z.output<T[M]['result']> | Promise<z.output<T[M]['result']>>;
};

/** The request side of a MethodTable, from a schema table and its handlers. */
export function bindHandlers<T extends SchemaTable, C>(schemas: T, handlers: HandlersOf<T, C>): MethodTable<C>['requests'] {
  const requests: MethodTable<C>['requests'] = {};
  for (const name of Object.keys(schemas) as (keyof T & string)[]) {
    const { whenTooLarge } = schemas[name]!;
    // The schema is read at the first request, not now: a table may build its schemas when first read (protocol-schemas.ts).
    const params: ParamsCheck = { safeParse: (value) => schemas[name]!.params.safeParse(value) };
    requests[name] = { params, handler: handlers[name] as RequestSpec<unknown, unknown, C>['handler'], ...(whenTooLarge ? { whenTooLarge } : {}) };
  }
  return requests;
}

export type LogFn = (level: 'debug' | 'warn' | 'error', event: string, fields: Record<string, unknown>) => void;

export interface EndpointOptions {
  limits?: Partial<Limits>;
  /** The error object to send for an error a handler threw; undefined for an unexpected one, sent as -32603 and logged. */
  mapError?: (error: unknown) => ResponseError | undefined;
  /** Applied to the message of an unexpected error before it is sent or logged (secrets). */
  redact?: (text: string) => string;
  log?: LogFn;
}

/** "jobs.0.cwd: Invalid input: expected string, received number" */
export function describeParamsError(error: z.$ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid params';
  // Keys come from the peer: a few, each cut short, so that the message stays a sentence.
  const name = (key: PropertyKey): string => (String(key).length > 64 ? `${String(key).slice(0, 64)}...` : String(key));
  const path = issue.path.map(name).join('.');
  const unknown = issue.code === 'unrecognized_keys' ? issue.keys.slice(0, 5).map(name).join(', ') + (issue.keys.length > 5 ? `, ... (${issue.keys.length} in all)` : '') : '';
  const key = unknown ? `${path ? `${path}.` : ''}${unknown}` : path;
  return key ? `${key}: ${issue.message}` : issue.message;
}
