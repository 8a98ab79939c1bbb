import * as z from 'zod/mini';
import { NOTIFY_EVENTS, type NotifySpec } from './spec.js';

/** Kept apart from spec.ts so that what only reads specs (a job being built) does not load zod. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The zod/mini schema of a NotifySpec, for the qwexd protocol (job.notify) and the records it reads (see protocol-schemas.ts). */
export function notifySpecSchema(): z.ZodMiniType<NotifySpec> {
  const envName = z.string().check(z.regex(ENV_NAME), z.maxLength(256));
  const text = z.string().check(z.minLength(1), z.maxLength(4096));
  const positiveInt = () => z.number().check(z.int(), z.positive());
  const base = { name: z.optional(z.string().check(z.minLength(1), z.maxLength(128))), on: z.array(z.enum(NOTIFY_EVENTS)).check(z.maxLength(NOTIFY_EVENTS.length)) };
  const smtp = z.strictObject({
    host: text,
    port: z.number().check(z.int(), z.gte(1), z.lte(65535)),
    tls: z.enum(['starttls', 'tls', 'none']),
    user: z.optional(text),
    userEnv: z.optional(envName),
    passwordEnv: z.optional(envName),
    passwordFile: z.optional(text),
    caFile: z.optional(text),
  });
  const target = z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('webhook'), ...base, url: text, secretEnv: z.optional(envName), secretFile: z.optional(text) }),
    z.strictObject({ kind: z.literal('slack'), ...base, url: z.optional(text), urlEnv: z.optional(envName), urlFile: z.optional(text) }),
    z.strictObject({ kind: z.literal('email'), ...base, to: z.array(text).check(z.minLength(1), z.maxLength(100)), from: z.optional(text), smtp }),
    z.strictObject({
      kind: z.literal('command'),
      ...base,
      command: z.array(z.string().check(z.maxLength(131072))).check(z.minLength(1), z.maxLength(4096)),
      shell: z.boolean(),
      timeoutMs: z.optional(positiveInt()),
    }),
  ]);
  return z.strictObject({
    targets: z.array(target).check(z.maxLength(64)),
    use: z.optional(z.array(z.string().check(z.minLength(1), z.maxLength(128))).check(z.maxLength(64))),
    waitingAfterMs: z.optional(positiveInt()),
    retryForMs: z.optional(positiveInt()),
    dashboardUrl: z.optional(text),
  });
}
