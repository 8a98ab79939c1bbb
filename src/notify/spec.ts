import type { RunStatus } from '../run/model.js';

/**
 * What a run (or a workflow) asks to be told about, and where: the
 * notification targets as recorded with the job (`job.notify` in run.json).
 * Secrets are never part of a spec: a target names the environment variable
 * or the file its secret comes from, read when a delivery is made.
 */

/** The events a target can be fired by. The first four are a run's end; `waiting` a run queued longer than `waitingAfterMs`; `workflow` a workflow's end. */
export const NOTIFY_EVENTS = ['succeeded', 'failed', 'cancelled', 'lost', 'waiting', 'workflow'] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

/** Targets fire on a run's end unless they say otherwise. */
export const DEFAULT_EVENTS: readonly NotifyEvent[] = ['succeeded', 'failed', 'cancelled', 'lost'];

/** A run queued (pending) longer than this fires `waiting`, unless the configuration says how long. */
export const DEFAULT_WAITING_AFTER_MS = 30 * 60_000;
/** How long a delivery is retried before it is recorded as failed. */
export const DEFAULT_RETRY_FOR_MS = 24 * 3_600_000;

/** The event a run's final status fires. */
export function endEvent(status: RunStatus): NotifyEvent | undefined {
  return status === 'succeeded' || status === 'failed' || status === 'cancelled' || status === 'lost' ? status : undefined;
}

export interface SmtpSettings {
  host: string;
  port: number;
  /** `starttls`: plain connection upgraded with STARTTLS, which is required; `tls`: TLS from the start (465); `none`: no TLS (a relay on localhost). */
  tls: 'starttls' | 'tls' | 'none';
  user?: string;
  userEnv?: string;
  passwordEnv?: string;
  passwordFile?: string;
  /** A PEM file of the CA that signed the server's certificate (a private relay). */
  caFile?: string;
}

interface TargetBase {
  /** How `--notify NAME` refers to it. */
  name?: string;
  /** The events that fire it. */
  on: NotifyEvent[];
}

/** A JSON body POSTed to `url`, signed with HMAC-SHA256 when a secret is given (see signature.ts). */
export interface WebhookTarget extends TargetBase {
  kind: 'webhook';
  url: string;
  secretEnv?: string;
  secretFile?: string;
}

/** A message in Slack's format, POSTed to an incoming webhook. The URL is itself a secret: from `urlEnv` or `urlFile`, or given as it is. */
export interface SlackTarget extends TargetBase {
  kind: 'slack';
  url?: string;
  urlEnv?: string;
  urlFile?: string;
}

export interface EmailTarget extends TargetBase {
  kind: 'email';
  to: string[];
  from?: string;
  smtp: SmtpSettings;
}

/** A program run on the supervisor's machine (a desktop notification), with the event's fields in its environment. */
export interface CommandTarget extends TargetBase {
  kind: 'command';
  /** argv; with `shell`, one string for /bin/sh -c. */
  command: string[];
  shell: boolean;
  timeoutMs?: number;
}

export type NotifyTarget = WebhookTarget | SlackTarget | EmailTarget | CommandTarget;

/** What a job records: its targets, resolved from the configuration and `--notify` when it was submitted. */
export interface NotifySpec {
  targets: NotifyTarget[];
  /** Names of targets that the supervisor's own configuration defines (qwexcloud's team and user targets). */
  use?: string[];
  /** `waiting` fires once a run has been pending this long. */
  waitingAfterMs?: number;
  /** How long each delivery is retried. */
  retryForMs?: number;
  /** A link to the run for messages: `{id}` is replaced by the run's id. */
  dashboardUrl?: string;
}

/** The names of the environment variables a target reads its secrets (and SMTP user) from. */
export function secretNames(target: NotifyTarget): string[] {
  switch (target.kind) {
    case 'webhook':
      return target.secretEnv ? [target.secretEnv] : [];
    case 'slack':
      return target.urlEnv ? [target.urlEnv] : [];
    case 'email':
      return [target.smtp.userEnv, target.smtp.passwordEnv].filter((n): n is string => n !== undefined);
    case 'command':
      return [];
  }
}

/**
 * The target as people see it: where it goes, with nothing secret. A
 * webhook's URL loses its user, password and query; a Slack URL (a secret
 * in itself) shows only its host.
 */
export function describeTarget(target: NotifyTarget): string {
  const named = target.name ? ` (${target.name})` : '';
  switch (target.kind) {
    case 'webhook':
      return `webhook ${publicUrl(target.url)}${named}`;
    case 'slack':
      return `slack ${target.url ? new URL(target.url).host : target.urlEnv ? `$${target.urlEnv}` : 'from a file'}${named}`;
    case 'email':
      return `email ${target.to.join(', ')}${named}`;
    case 'command':
      return `command ${target.shell ? 'sh -c' : (target.command[0] ?? '')}${named}`;
  }
}

/** A URL without credentials or query: what may be shown of a webhook address. */
export function publicUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(not a URL)';
  }
}

/**
 * A target as a record may show it (`qwex status --json`, the server's
 * run records): a Slack URL hidden, a webhook URL without credentials or
 * query. The secret's source (a variable's name, a file) is not secret.
 */
export function publicTarget(target: NotifyTarget): NotifyTarget {
  if (target.kind === 'slack' && target.url) return { ...target, url: `https://${new URL(target.url).host}/***` };
  if (target.kind === 'webhook') return { ...target, url: publicUrl(target.url) };
  return target;
}

/** A spec as a record may show it. */
export function publicSpec(spec: NotifySpec): NotifySpec {
  return { ...spec, targets: spec.targets.map(publicTarget) };
}
