import { chmodSync, lstatSync, mkdirSync } from 'node:fs';
import { ErrorCode, QwexError } from './errors.js';
import { maxSocketPathBytes } from './paths.js';

/**
 * Creates (0700) and checks the runtime directory: it must be a real
 * directory owned by this user and closed to everyone else, since whoever
 * can reach the socket can run commands as this user.
 */
export function ensureRuntimeDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stats = lstatSync(dir);
  if (!stats.isDirectory()) {
    throw new QwexError(ErrorCode.StateUnwritable, `${dir} is not a directory`, { hint: 'set QWEX_RUNTIME_DIR to a directory of your own' });
  }
  const uid = process.getuid?.();
  if (uid !== undefined && stats.uid !== uid) {
    throw new QwexError(ErrorCode.StateUnwritable, `${dir} belongs to uid ${stats.uid}, not to you (uid ${uid})`, {
      hint: 'another user created it; set QWEX_RUNTIME_DIR to a directory of your own',
    });
  }
  if ((stats.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

export function checkSocketPath(path: string): void {
  const bytes = Buffer.byteLength(path);
  const max = maxSocketPathBytes();
  if (bytes > max) {
    throw new QwexError(ErrorCode.SocketPathTooLong, `the socket path ${path} is ${bytes} bytes long; Unix sockets allow at most ${max} here`, {
      hint: 'set QWEX_RUNTIME_DIR to a shorter directory (e.g. /tmp/qwex-$UID)',
    });
  }
}
