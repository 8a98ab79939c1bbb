import type { WebhookTarget } from '../spec.js';
import { DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signatureHeader } from '../signature.js';
import type { Attempt } from './attempt.js';
import { DeliveryError } from './delivery-error.js';
import { postJson } from './http.js';

/** The event's JSON, with its delivery id, signed when the target has a secret. */
export async function sendWebhook(target: WebhookTarget, attempt: Attempt): Promise<string> {
  const body = JSON.stringify({ delivery: attempt.delivery, ...attempt.payload });
  const headers: Record<string, string> = { [DELIVERY_HEADER]: attempt.delivery, [EVENT_HEADER]: attempt.payload.event };
  if (target.secretEnv !== undefined || target.secretFile !== undefined) {
    const secret = target.secretEnv !== undefined ? attempt.secrets.env(target.secretEnv) : attempt.secrets.file(target.secretFile!);
    if (!secret) {
      throw new DeliveryError(target.secretEnv !== undefined ? `the signing secret $${target.secretEnv} is not set (not in the submitter's environment nor the supervisor's)` : `the signing secret file ${target.secretFile} cannot be read`, { permanent: false });
    }
    // Signed at each attempt: a retry carries a fresh time, so a receiver's replay window holds.
    headers[SIGNATURE_HEADER] = signatureHeader(secret, body);
  }
  const status = await postJson(target.url, body, headers, attempt.signal);
  return `HTTP ${status}`;
}
