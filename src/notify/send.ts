import type { NotifyTarget } from './spec.js';
import type { Attempt } from './targets/attempt.js';
import { runCommand } from './targets/command.js';
import { sendEmail } from './targets/email.js';
import { sendSlack } from './targets/slack.js';
import { sendWebhook } from './targets/webhook.js';

export { DeliveryError } from './targets/delivery-error.js';
export type { Attempt, SecretSource } from './targets/attempt.js';

/**
 * Makes one attempt at delivering an event to a target. Resolves with what
 * the receiver said (for the journal); rejects with a DeliveryError saying
 * why, never with a secret in it.
 */
export function send(target: NotifyTarget, attempt: Attempt, options: { cwd?: string } = {}): Promise<string> {
  switch (target.kind) {
    case 'webhook':
      return sendWebhook(target, attempt);
    case 'slack':
      return sendSlack(target, attempt);
    case 'email':
      return sendEmail(target, attempt);
    case 'command':
      return runCommand(target, attempt, options.cwd);
  }
}
