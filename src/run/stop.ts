import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeJsonAtomic } from '../fs-atomic.js';
import { RunFiles } from '../paths.js';

/** Between SIGTERM and SIGKILL when nobody said otherwise (the config's kill_grace_seconds defaults to it too). */
export const DEFAULT_KILL_GRACE_MS = 10_000;

/** Why a run is being stopped, written before anyone is signalled so that whichever process supervises it records the right outcome. */
export interface StopRequest {
  reason: 'cancel' | 'timeout';
  requestedAt: string;
  graceMs: number;
}

export function readStopRequest(dir: string): StopRequest | undefined {
  const path = join(dir, RunFiles.cancelRequest);
  if (!existsSync(path)) return undefined;
  let request: Partial<StopRequest> = {};
  try {
    request = JSON.parse(readFileSync(path, 'utf8')) as Partial<StopRequest>;
  } catch {
    // Torn or unreadable: a stop was asked for all the same (the file exists); its details fall back to defaults.
  }
  return {
    reason: request.reason === 'timeout' ? 'timeout' : 'cancel',
    requestedAt: request.requestedAt ?? new Date().toISOString(),
    graceMs: typeof request.graceMs === 'number' ? request.graceMs : DEFAULT_KILL_GRACE_MS,
  };
}

export function writeStopRequest(dir: string, request: Omit<StopRequest, 'requestedAt'>): void {
  writeJsonAtomic(join(dir, RunFiles.cancelRequest), { ...request, requestedAt: new Date().toISOString() }, 'file');
}
