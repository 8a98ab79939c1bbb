import { formatDuration, headline, type EventPayload } from '../payload.js';
import type { SlackTarget } from '../spec.js';
import type { Attempt } from './attempt.js';
import { DeliveryError } from './delivery-error.js';
import { postJson } from './http.js';

const ICONS: Record<string, string> = { succeeded: ':white_check_mark:', failed: ':x:', cancelled: ':no_entry_sign:', lost: ':grey_question:', waiting: ':hourglass_flowing_sand:' };

/** A message in Slack's format (text for notifications, blocks for the channel), to an incoming webhook. */
export async function sendSlack(target: SlackTarget, attempt: Attempt): Promise<string> {
  const url = target.url ?? (target.urlEnv !== undefined ? attempt.secrets.env(target.urlEnv) : attempt.secrets.file(target.urlFile!));
  if (!url) {
    throw new DeliveryError(target.urlEnv !== undefined ? `the Slack webhook URL $${target.urlEnv} is not set (not in the submitter's environment nor the supervisor's)` : `the Slack webhook URL file ${target.urlFile} cannot be read`, { permanent: false });
  }
  let host: string;
  try {
    host = new URL(url).host;
  } catch {
    throw new DeliveryError('the Slack webhook URL is not a URL', { permanent: true });
  }
  // The URL is the secret: errors name only its host.
  const status = await postJson(url, JSON.stringify(slackMessage(attempt.payload)), {}, attempt.signal, `Slack (${host})`);
  return `HTTP ${status}`;
}

/** Slack's incoming-webhook message: `text` (the notification's line) and `blocks` with the status, command, duration, exit code and a link. */
export function slackMessage(payload: EventPayload): { text: string; blocks: unknown[] } {
  const status = payload.workflow?.status ?? payload.run!.status;
  const icon = ICONS[payload.event === 'waiting' ? 'waiting' : status] ?? ':bell:';
  const url = payload.run?.url ?? payload.workflow?.url ?? null;
  const title = escape(headline(payload));
  const lines: string[] = [`${icon} *${url ? `<${url}|${title}>` : title}*`];
  const facts: string[] = [];
  if (payload.run) {
    const r = payload.run;
    lines.push(`\`${escape(r.command)}\``);
    facts.push(`*status:* ${r.status}`);
    if (r.durationMs !== null) facts.push(`*${payload.event === 'waiting' ? 'waited' : 'duration'}:* ${formatDuration(r.durationMs)}`);
    if (r.exitCode !== null) facts.push(`*exit code:* ${r.exitCode}`);
    if (r.signal) facts.push(`*signal:* ${r.signal}`);
    facts.push(`*backend:* ${escape(r.target ?? r.backend)}`);
    if (r.error && r.status !== 'succeeded') lines.push(`> ${escape(r.error.message.split('\n')[0] ?? '')}`);
  } else if (payload.workflow) {
    const w = payload.workflow;
    facts.push(`*status:* ${w.status}`);
    if (w.durationMs !== null) facts.push(`*duration:* ${formatDuration(w.durationMs)}`);
    lines.push(w.stages.map((s) => `${escape(s.name)}: ${s.status}${s.exitCode !== null && s.exitCode !== 0 ? ` (exit ${s.exitCode})` : ''}`).join(' · '));
  }
  return {
    text: `${headline(payload)}${url ? ` ${url}` : ''}`,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text: lines.join('\n') } },
      { type: 'context', elements: [{ type: 'mrkdwn', text: facts.join(' · ') }] },
    ],
  };
}

/** Slack's mrkdwn: &, < and > are control characters. */
function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
