import { VERSION } from '../../version.js';
import { publicUrl } from '../spec.js';
import { DeliveryError } from './delivery-error.js';

/** How long one HTTP attempt may take, connection to response, before it counts as failed. */
export const HTTP_TIMEOUT_MS = 15_000;

/**
 * POSTs a JSON body; resolves with the HTTP status when it is 2xx. A
 * refusal the receiver will keep making (4xx but 408 and 429) is permanent;
 * anything else (no connection, 5xx, a timeout) is worth retrying. Errors
 * name the URL without its credentials, path secrets or query.
 */
export async function postJson(url: string, body: string, headers: Record<string, string>, signal: AbortSignal, shownAs = publicUrl(url)): Promise<number> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', 'user-agent': `qwex/${VERSION}`, ...headers },
      // A redirect could carry the signed body somewhere else: the configured URL answers, or it fails.
      redirect: 'manual',
      signal: AbortSignal.any([signal, AbortSignal.timeout(HTTP_TIMEOUT_MS)]),
    });
  } catch (error) {
    // A library message may quote the URL; only its public form is ever shown.
    throw new DeliveryError(`${shownAs}: ${networkReason(error).split(url).join(shownAs)}`, { permanent: false });
  }
  const text = await response.text().catch(() => '');
  if (response.status >= 200 && response.status < 300) return response.status;
  const permanent = response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 425 && response.status !== 429;
  const said = text.trim().split('\n')[0]?.slice(0, 200);
  throw new DeliveryError(`${shownAs} answered HTTP ${response.status}${said ? `: ${said}` : ''}`, { permanent, status: response.status });
}

function networkReason(error: unknown): string {
  const e = error as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return `no answer within ${HTTP_TIMEOUT_MS / 1000} s`;
  if (e.name === 'AbortError') return 'stopped';
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(error);
}
