import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { parse as parseWords } from 'shell-quote';
import { z } from 'zod';
import { ErrorCode, QwexError } from '../errors.js';
import { NOTIFY_EVENTS, type NotifyEvent, type NotifyTarget, type SmtpSettings } from './spec.js';

/**
 * The `notify:` section of qwex.yaml (and of qwexcloud's configuration):
 * its schema and how it is read (resolve.ts makes it and `--notify` a
 * job's NotifySpec).
 *
 *   notify:
 *     on: [succeeded, failed]          # default events of targets that name none
 *     waiting_longer_than: 30m         # when `waiting` fires
 *     retry_for: 24h                   # how long a delivery is retried
 *     dashboard_url: https://qwex.example/runs/{id}
 *     smtp: { host: smtp.example.org, port: 587, user_env: SMTP_USER, password_env: SMTP_PASSWORD }
 *     targets:
 *       - webhook: https://ci.example/hook
 *         secret_env: QWEX_WEBHOOK_SECRET
 *       - slack_env: SLACK_WEBHOOK_URL
 *         on: [failed]
 *       - email: me@example.org
 *       - name: desktop
 *         on_end: notify-send "qwex" "run $QWEX_RUN_ID $QWEX_RUN_STATUS"
 *         on_request: true             # only for runs that ask: qwex run --notify desktop
 */

/** The section once read: camelCase, paths absolute, durations in milliseconds; events not yet defaulted. */
export interface NotifySection {
  on?: NotifyEvent[];
  waitingAfterMs?: number;
  retryForMs?: number;
  dashboardUrl?: string;
  smtp?: SmtpSettings;
  targets: ConfiguredTarget[];
}

/** A target as configured: `on` may be left to the section, `onRequest` ones fire only for runs that name them. */
export type ConfiguredTarget = DistributiveOmit<NotifyTarget, 'on'> & { on?: NotifyEvent[]; onRequest: boolean; smtpFromSection?: boolean };
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const envName = z.string().regex(ENV_NAME, 'expected an environment variable name');
const duration = z.union([z.number().positive(), z.string().min(1)]);
const events = z.array(z.enum(NOTIFY_EVENTS)).min(1);
const neverHere = (what: string) =>
  z.unknown().refine(() => false, { message: `${what} is never read from a configuration file: use password_env (a variable) or password_file` }).optional();

const smtpSchema = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).optional(),
  tls: z.enum(['starttls', 'tls', 'none']).optional(),
  user: z.string().min(1).optional(),
  user_env: envName.optional(),
  password_env: envName.optional(),
  password_file: z.string().min(1).optional(),
  ca_file: z.string().min(1).optional(),
  password: neverHere('a password'),
  pass: neverHere('a password'),
});

const KINDS = ['webhook', 'slack', 'slack_env', 'slack_file', 'email', 'on_end'] as const;

const targetSchema = z
  .strictObject({
    name: z.string().min(1).max(128).optional(),
    on: events.optional(),
    on_request: z.boolean().optional(),
    webhook: z.string().url('expected an http(s) URL').optional(),
    secret_env: envName.optional(),
    secret_file: z.string().min(1).optional(),
    secret: z.unknown().refine(() => false, { message: 'a secret is never read from a configuration file: use secret_env (a variable) or secret_file' }).optional(),
    slack: z.string().url('expected the incoming webhook\'s URL').optional(),
    slack_env: envName.optional(),
    slack_file: z.string().min(1).optional(),
    email: z.union([z.string().min(3), z.array(z.string().min(3)).min(1)]).optional(),
    from: z.string().min(3).optional(),
    smtp: smtpSchema.optional(),
    on_end: z.union([z.string().min(1), z.array(z.string()).min(1)]).optional(),
    shell: z.boolean().optional(),
    timeout: duration.optional(),
  })
  .superRefine((t, ctx) => {
    const kinds = KINDS.filter((k) => t[k] !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({ code: 'custom', message: kinds.length === 0 ? `a target needs one of ${KINDS.join(', ')}` : `a target is one of ${KINDS.join(', ')}, not ${kinds.join(' and ')}` });
      return;
    }
    const kind = kinds[0]!;
    const allowed: Record<(typeof KINDS)[number], string[]> = {
      webhook: ['secret_env', 'secret_file'],
      slack: [],
      slack_env: [],
      slack_file: [],
      email: ['from', 'smtp'],
      on_end: ['shell', 'timeout'],
    };
    for (const key of ['secret_env', 'secret_file', 'from', 'smtp', 'shell', 'timeout'] as const) {
      if (t[key] !== undefined && !allowed[kind].includes(key)) ctx.addIssue({ code: 'custom', path: [key], message: `${key} is not a setting of a ${kind} target` });
    }
    if (t.secret_env !== undefined && t.secret_file !== undefined) ctx.addIssue({ code: 'custom', path: ['secret_file'], message: 'give secret_env or secret_file, not both' });
  });

export const notifySectionSchema = z.strictObject({
  on: events.optional(),
  waiting_longer_than: duration.optional(),
  retry_for: duration.optional(),
  dashboard_url: z.string().url().optional(),
  smtp: smtpSchema.optional(),
  targets: z.array(targetSchema).optional(),
});

export type NotifySectionFile = z.infer<typeof notifySectionSchema>;

/** Reads a validated section; relative paths are taken from `root` (the project, or the server's configuration file). */
export function readNotifySection(file: NotifySectionFile, root: string, where: string): NotifySection {
  const smtp = file.smtp === undefined ? undefined : readSmtp(file.smtp, root);
  const targets = (file.targets ?? []).map((t, i) => readTarget(t, root, smtp, `${where}.targets.${i}`));
  const names = new Set<string>();
  for (const t of targets) {
    if (t.name === undefined) continue;
    if (names.has(t.name)) throw configError(`${where}.targets: two targets are named "${t.name}"`, 'target names must be unique');
    names.add(t.name);
  }
  return {
    ...(file.on === undefined ? {} : { on: file.on }),
    ...(file.waiting_longer_than === undefined ? {} : { waitingAfterMs: durationMs(file.waiting_longer_than, `${where}.waiting_longer_than`) }),
    ...(file.retry_for === undefined ? {} : { retryForMs: durationMs(file.retry_for, `${where}.retry_for`) }),
    ...(file.dashboard_url === undefined ? {} : { dashboardUrl: file.dashboard_url }),
    ...(smtp === undefined ? {} : { smtp }),
    targets,
  };
}

/** Later files win key by key (`targets` is replaced whole), as for the rest of the configuration. */
export function mergeNotifySections(base: NotifySection | undefined, over: NotifySection): NotifySection {
  return base === undefined ? over : { ...base, ...over, targets: over.targets.length > 0 ? over.targets : base.targets };
}

function readSmtp(s: z.infer<typeof smtpSchema>, root: string): SmtpSettings {
  const tls = s.tls ?? 'starttls';
  return {
    host: s.host,
    port: s.port ?? (tls === 'tls' ? 465 : 587),
    tls,
    ...(s.user === undefined ? {} : { user: s.user }),
    ...(s.user_env === undefined ? {} : { userEnv: s.user_env }),
    ...(s.password_env === undefined ? {} : { passwordEnv: s.password_env }),
    ...(s.password_file === undefined ? {} : { passwordFile: filePath(s.password_file, root) }),
    ...(s.ca_file === undefined ? {} : { caFile: filePath(s.ca_file, root) }),
  };
}

function readTarget(t: z.infer<typeof targetSchema>, root: string, smtp: SmtpSettings | undefined, where: string): ConfiguredTarget {
  const common = { ...(t.name === undefined ? {} : { name: t.name }), ...(t.on === undefined ? {} : { on: t.on }), onRequest: t.on_request === true };
  if (t.webhook !== undefined) {
    checkHttp(t.webhook, `${where}.webhook`);
    return {
      kind: 'webhook',
      ...common,
      url: t.webhook,
      ...(t.secret_env === undefined ? {} : { secretEnv: t.secret_env }),
      ...(t.secret_file === undefined ? {} : { secretFile: filePath(t.secret_file, root) }),
    };
  }
  if (t.slack !== undefined) {
    checkHttp(t.slack, `${where}.slack`);
    return { kind: 'slack', ...common, url: t.slack };
  }
  if (t.slack_env !== undefined) return { kind: 'slack', ...common, urlEnv: t.slack_env };
  if (t.slack_file !== undefined) return { kind: 'slack', ...common, urlFile: filePath(t.slack_file, root) };
  if (t.email !== undefined) {
    const server = t.smtp === undefined ? smtp : readSmtp(t.smtp, root);
    if (server === undefined) throw configError(`${where}: an email target needs an SMTP server`, 'add notify.smtp (host, port, user_env, password_env) or smtp: under the target');
    return { kind: 'email', ...common, to: typeof t.email === 'string' ? [t.email] : t.email, ...(t.from === undefined ? {} : { from: t.from }), smtp: server, smtpFromSection: t.smtp === undefined };
  }
  const shell = t.shell === true;
  const command = typeof t.on_end === 'string' ? (shell ? [t.on_end] : splitWords(t.on_end!, `${where}.on_end`)) : t.on_end!;
  if (shell && command.length !== 1) throw configError(`${where}.on_end: with shell: true, give one command line (a string)`);
  return { kind: 'command', ...common, command, shell, ...(t.timeout === undefined ? {} : { timeoutMs: durationMs(t.timeout, `${where}.timeout`) }) };
}

/**
 * A command line split into argv as a shell would split it, without a
 * shell: quotes group words, `$QWEX_...` references stay for delivery to
 * fill in, and pipes, redirections or `;` are refused (they need shell: true).
 */
export function splitWords(line: string, where: string): string[] {
  const words: string[] = [];
  for (const entry of parseWords(line, (name) => `$${name}`)) {
    if (typeof entry === 'string') words.push(entry);
    else if ('op' in entry && entry.op === 'glob') words.push(entry.pattern);
    else if ('comment' in entry) break;
    else throw configError(`${where}: "${entry.op}" needs a shell`, 'add shell: true to run the line with /bin/sh -c, or give the command as a list of arguments');
  }
  if (words.length === 0) throw configError(`${where}: no command`);
  return words;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A number of seconds, or "500ms", "90s", "30m", "2h", "1d", "1h30m", in milliseconds. */
export function durationMs(value: number | string, where: string): number {
  if (typeof value === 'number') return Math.round(value * 1000);
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) {
    throw configError(`${where}: "${value}" is not a duration`, 'use a number of seconds or e.g. 90s, 30m, 2h, 1h30m');
  }
  return Math.round(parts.reduce((sum, p) => sum + Number(p[1]) * UNITS[p[2]!]!, 0));
}

function filePath(path: string, root: string): string {
  if (path === '~' || path.startsWith('~/')) return join(homedir(), path.slice(1));
  return isAbsolute(path) ? path : resolve(root, path);
}

function checkHttp(url: string, where: string): void {
  const protocol = new URL(url).protocol;
  if (protocol !== 'http:' && protocol !== 'https:') throw configError(`${where}: expected an http or https URL, not ${protocol}`);
}

function configError(message: string, hint?: string): QwexError {
  return new QwexError(ErrorCode.ConfigInvalid, message, hint === undefined ? {} : { hint });
}
