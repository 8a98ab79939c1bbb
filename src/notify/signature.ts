import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * The webhook signature: `X-Qwex-Signature: t=UNIX_SECONDS,v1=HEX`, HEX
 * being HMAC-SHA256 with the shared secret over `UNIX_SECONDS + "." + body`
 * (the raw bytes sent). Signing the time with the body lets a receiver
 * refuse an old request replayed (check that t is within a few minutes of
 * its clock); the delivery id (X-Qwex-Delivery) lets it drop a copy.
 */
export const SIGNATURE_HEADER = 'x-qwex-signature';
export const DELIVERY_HEADER = 'x-qwex-delivery';
export const EVENT_HEADER = 'x-qwex-event';

/** How far from the receiver's clock a signed time may be, by default. */
export const DEFAULT_TOLERANCE_S = 300;

export function signatureHeader(secret: string, body: string, unixSeconds: number = Math.floor(Date.now() / 1000)): string {
  return `t=${unixSeconds},v1=${hmac(secret, unixSeconds, body)}`;
}

/**
 * Checks a signature header as a receiver should: the HMAC over the time
 * and the body, compared in constant time, and the time within `toleranceS`
 * of now. Returns why it is refused, or undefined when it is good.
 */
export function verifySignature(header: string | undefined, body: string, secret: string, options: { toleranceS?: number; now?: number } = {}): string | undefined {
  if (!header) return 'no signature header';
  const fields = new Map(header.split(',').map((part) => part.trim().split('=', 2) as [string, string]));
  const t = Number(fields.get('t'));
  const given = fields.get('v1');
  if (!Number.isInteger(t) || !given) return 'the header is not t=UNIX_SECONDS,v1=HEX';
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  if (Math.abs(now - t) > (options.toleranceS ?? DEFAULT_TOLERANCE_S)) return `the signed time is ${now - t} s away from now`;
  const expected = Buffer.from(hmac(secret, t, body), 'hex');
  const actual = Buffer.from(given, 'hex');
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) return 'the signature does not match';
  return undefined;
}

function hmac(secret: string, unixSeconds: number, body: string): string {
  return createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex');
}
