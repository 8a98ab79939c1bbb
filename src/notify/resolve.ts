import { ErrorCode, QwexError } from '../errors.js';
import type { ConfiguredTarget, NotifySection } from './config.js';
import { DEFAULT_EVENTS, type NotifySpec, type NotifyTarget } from './spec.js';

/**
 * The job's spec: every target that is not `on_request`, and those named
 * by `requested` (`--notify`: a target's name, an http(s) URL (a Slack
 * incoming webhook's or any webhook's), or mailto:ADDRESS with the
 * section's SMTP server). Undefined when nothing is to be sent.
 */
export function resolveNotify(section: NotifySection | undefined, requested: readonly string[] = []): NotifySpec | undefined {
  const defaults = section?.on ?? [...DEFAULT_EVENTS];
  const chosen: NotifyTarget[] = [];
  const finish = (t: ConfiguredTarget): NotifyTarget => {
    const { onRequest: _onRequest, smtpFromSection: _fromSection, ...rest } = t;
    return { ...rest, on: t.on ?? defaults } as NotifyTarget;
  };
  for (const t of section?.targets ?? []) if (!t.onRequest) chosen.push(finish(t));
  for (const request of requested) {
    const named = section?.targets.find((t) => t.name === request);
    if (named) {
      if (named.onRequest) chosen.push(finish(named));
      continue; // already in: every run gets it
    }
    if (/^https?:\/\//i.test(request)) {
      checkHttp(request, '--notify');
      const slack = /(^|\.)hooks\.slack\.com$/i.test(new URL(request).hostname);
      chosen.push(slack ? { kind: 'slack', url: request, on: defaults } : { kind: 'webhook', url: request, on: defaults });
      continue;
    }
    if (/^mailto:/i.test(request)) {
      const to = decodeURIComponent(request.slice('mailto:'.length));
      if (!/^[^@\s]+@[^@\s]+$/.test(to)) throw usage(`--notify ${request}: "${to}" is not an email address`);
      if (!section?.smtp) throw usage(`--notify ${request}: no SMTP server is configured`, 'add notify.smtp (host, port, user_env, password_env) to qwex.yaml');
      chosen.push({ kind: 'email', to: [to], smtp: section.smtp, on: defaults });
      continue;
    }
    const names = (section?.targets ?? []).flatMap((t) => (t.name ? [t.name] : []));
    throw usage(`--notify ${request}: not a target of notify.targets${names.length ? ` (${names.join(', ')})` : ''}, an http(s) URL or mailto:ADDRESS`, 'name a target in qwex.yaml\'s notify.targets with name:, or give a URL');
  }
  if (chosen.length === 0) return undefined;
  return {
    targets: chosen,
    ...(section?.waitingAfterMs === undefined ? {} : { waitingAfterMs: section.waitingAfterMs }),
    ...(section?.retryForMs === undefined ? {} : { retryForMs: section.retryForMs }),
    ...(section?.dashboardUrl === undefined ? {} : { dashboardUrl: section.dashboardUrl }),
  };
}

function checkHttp(url: string, where: string): void {
  let protocol: string;
  try {
    protocol = new URL(url).protocol;
  } catch {
    throw usage(`${where}: "${url.split('?')[0]}" is not a URL`);
  }
  if (protocol !== 'http:' && protocol !== 'https:') throw usage(`${where}: expected an http or https URL, not ${protocol}`);
}

function usage(message: string, hint?: string): QwexError {
  return new QwexError(ErrorCode.Usage, message, hint === undefined ? {} : { hint });
}
