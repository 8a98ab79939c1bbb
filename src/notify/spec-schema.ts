import { z } from 'zod';
import { NOTIFY_EVENTS, type NotifySpec } from './spec.js';

/** Kept apart from spec.ts so that what only reads specs (a job being built) does not load zod. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The zod schema of a NotifySpec, for the qwexd protocol (job.notify) and the records it reads. */
export function notifySpecSchema(): z.ZodType<NotifySpec> {
  const envName = z.string().regex(ENV_NAME).max(256);
  const text = z.string().min(1).max(4096);
  const base = { name: z.string().min(1).max(128).optional(), on: z.array(z.enum(NOTIFY_EVENTS)).max(NOTIFY_EVENTS.length) };
  const smtp = z.strictObject({
    host: text,
    port: z.number().int().min(1).max(65535),
    tls: z.enum(['starttls', 'tls', 'none']),
    user: text.optional(),
    userEnv: envName.optional(),
    passwordEnv: envName.optional(),
    passwordFile: text.optional(),
    caFile: text.optional(),
  });
  const target = z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('webhook'), ...base, url: text, secretEnv: envName.optional(), secretFile: text.optional() }),
    z.strictObject({ kind: z.literal('slack'), ...base, url: text.optional(), urlEnv: envName.optional(), urlFile: text.optional() }),
    z.strictObject({ kind: z.literal('email'), ...base, to: z.array(text).min(1).max(100), from: text.optional(), smtp }),
    z.strictObject({ kind: z.literal('command'), ...base, command: z.array(z.string().max(131072)).min(1).max(4096), shell: z.boolean(), timeoutMs: z.number().int().positive().optional() }),
  ]);
  return z.strictObject({
    targets: z.array(target).max(64),
    use: z.array(z.string().min(1).max(128)).max(64).optional(),
    waitingAfterMs: z.number().int().positive().optional(),
    retryForMs: z.number().int().positive().optional(),
    dashboardUrl: text.optional(),
  });
}
