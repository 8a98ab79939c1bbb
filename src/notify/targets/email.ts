import { readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { formatDuration, headline, type EventPayload } from '../payload.js';
import type { EmailTarget } from '../spec.js';
import type { Attempt } from './attempt.js';
import { DeliveryError } from './delivery-error.js';

/** How long one SMTP conversation may take, each step, before it counts as failed. */
const SMTP_TIMEOUT_MS = 30_000;

/**
 * A plain-text mail over SMTP, with nodemailer. By default the connection
 * must be upgraded with STARTTLS before anything (credentials included) is
 * sent; `tls: tls` speaks TLS from the start; `tls: none` only for a relay
 * on this machine. The user and password come from the environment or a
 * file, never from the configuration.
 */
export async function sendEmail(target: EmailTarget, attempt: Attempt): Promise<string> {
  const smtp = target.smtp;
  const user = smtp.user ?? (smtp.userEnv !== undefined ? attempt.secrets.env(smtp.userEnv) : undefined);
  const pass = smtp.passwordEnv !== undefined ? attempt.secrets.env(smtp.passwordEnv) : smtp.passwordFile !== undefined ? attempt.secrets.file(smtp.passwordFile) : undefined;
  if ((smtp.passwordEnv !== undefined || smtp.passwordFile !== undefined) && !pass) {
    throw new DeliveryError(smtp.passwordEnv !== undefined ? `the SMTP password $${smtp.passwordEnv} is not set (not in the submitter's environment nor the supervisor's)` : `the SMTP password file ${smtp.passwordFile} cannot be read`, { permanent: false });
  }
  if (pass !== undefined && !user) throw new DeliveryError('an SMTP password is given but no user (smtp.user or smtp.user_env)', { permanent: true });
  let ca: Buffer | undefined;
  if (smtp.caFile !== undefined) {
    try {
      ca = readFileSync(smtp.caFile);
    } catch (error) {
      throw new DeliveryError(`the SMTP CA file ${smtp.caFile} cannot be read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { permanent: false });
    }
  }
  const { createTransport } = await import('nodemailer');
  const transport = createTransport({
    host: smtp.host,
    port: smtp.port,
    secure: smtp.tls === 'tls',
    requireTLS: smtp.tls === 'starttls',
    ignoreTLS: smtp.tls === 'none',
    ...(user !== undefined && pass !== undefined ? { auth: { user, pass } } : {}),
    ...(ca ? { tls: { ca } } : {}),
    connectionTimeout: SMTP_TIMEOUT_MS,
    greetingTimeout: SMTP_TIMEOUT_MS,
    socketTimeout: SMTP_TIMEOUT_MS,
  });
  const abort = (): void => transport.close();
  attempt.signal.addEventListener('abort', abort, { once: true });
  try {
    const message = emailMessage(attempt.payload);
    const info = await transport.sendMail({
      from: target.from ?? `qwex <qwex@${hostname()}>`,
      to: target.to,
      subject: message.subject,
      text: message.text,
      headers: { 'X-Qwex-Delivery': attempt.delivery, 'X-Qwex-Event': attempt.payload.event },
      messageId: `<${attempt.delivery}@qwex>`,
    });
    return `accepted by ${smtp.host} (${String(info.response ?? '').slice(0, 80)})`;
  } catch (error) {
    const e = error as { code?: string; responseCode?: number; message?: string };
    // Refused credentials or addresses stay refused; a server that is down or busy may answer later.
    const permanent = e.code === 'EAUTH' || e.code === 'EENVELOPE' || (typeof e.responseCode === 'number' && e.responseCode >= 500 && e.responseCode < 600);
    throw new DeliveryError(`SMTP ${smtp.host}:${smtp.port}: ${e.code ? `${e.code}: ` : ''}${(e.message ?? String(error)).split('\n')[0]}`, { permanent });
  } finally {
    attempt.signal.removeEventListener('abort', abort);
    transport.close();
  }
}

export function emailMessage(payload: EventPayload): { subject: string; text: string } {
  const lines: string[] = [];
  if (payload.run) {
    const r = payload.run;
    lines.push(`run:       ${r.id}${r.name ? ` (${r.name})` : ''}`, `status:    ${r.status}`, `command:   ${r.command}`);
    if (r.exitCode !== null) lines.push(`exit code: ${r.exitCode}`);
    if (r.signal) lines.push(`signal:    ${r.signal}`);
    if (r.durationMs !== null) lines.push(`${payload.event === 'waiting' ? 'waited:   ' : 'duration: '} ${formatDuration(r.durationMs)}`);
    if (r.error && r.status !== 'succeeded') lines.push(`error:     ${r.error.message}`);
    lines.push(`backend:   ${r.target ?? r.backend}`, `project:   ${r.project}`, `host:      ${r.host}`);
    if (r.url) lines.push('', r.url);
  } else if (payload.workflow) {
    const w = payload.workflow;
    lines.push(`workflow:  ${w.id}${w.name ? ` (${w.name})` : ''}`, `status:    ${w.status}`);
    if (w.durationMs !== null) lines.push(`duration:  ${formatDuration(w.durationMs)}`);
    lines.push('', ...w.stages.map((s) => `  ${s.name}: ${s.status}${s.exitCode !== null ? ` (exit ${s.exitCode})` : ''}${s.runId ? `  run ${s.runId}` : ''}`));
    if (w.url) lines.push('', w.url);
  }
  lines.push('', `-- qwex, for ${safeUser()}`);
  return { subject: `[qwex] ${headline(payload)}`, text: `${lines.join('\n')}\n` };
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry for this uid (a container running as an arbitrary uid): the uid names the user.
    return String(process.getuid?.() ?? 'unknown');
  }
}
