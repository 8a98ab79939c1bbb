import { constants, openSync, writeSync } from 'node:fs';

/**
 * The log files a backend copies output into. Two processes can copy the
 * same run at once (a look that finds the command ended, and the
 * supervisor that just took the run over): both resume from what the file
 * held when they looked and write the same bytes. So copies write at
 * explicit offsets, never by appending: the same bytes land at the same
 * places, and nothing is written twice.
 */
export function openLogForCopy(path: string): number {
  // Not O_APPEND: Linux ignores the offset of a positional write to a file opened for appending.
  return openSync(path, constants.O_WRONLY | constants.O_CREAT, 0o600);
}

/** Writes all of `data` at `position` (a short write continues where it stopped). */
export function writeAllAt(fd: number, data: Uint8Array, position: number): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off, position + off);
}
