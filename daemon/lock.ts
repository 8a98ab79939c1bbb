import { ErrorCode, QwexError } from '../src/errors.js';
import { openSqlite, type SqlDatabase } from '../src/store/sqlite.js';

/**
 * One qwexd per user. The lock is an exclusive SQLite lock (an fcntl lock
 * underneath) held for the daemon's whole life: the kernel releases it when
 * the process dies, even by SIGKILL, so a crashed daemon never leaves a
 * stale lock behind and two daemons starting at once cannot both win.
 */
export class DaemonLock {
  private released = false;

  private constructor(private readonly db: SqlDatabase) {}

  static acquire(path: string): DaemonLock {
    const db = openSqlite(path, 0);
    try {
      db.exec('PRAGMA journal_mode = MEMORY');
      db.exec('PRAGMA locking_mode = EXCLUSIVE');
      db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER, since TEXT)');
      db.exec('BEGIN EXCLUSIVE');
      db.prepare('DELETE FROM holder').run();
      db.prepare('INSERT INTO holder VALUES (?, ?)').run(process.pid, new Date().toISOString());
      db.exec('COMMIT');
      return new DaemonLock(db);
    } catch (error) {
      db.close();
      if (/database is locked|SQLITE_BUSY/i.test((error as Error).message)) {
        throw new QwexError(ErrorCode.DaemonAlreadyRunning, 'qwexd is already running for this user', {
          hint: '`qwex daemon status` shows it; `qwex daemon stop` stops it',
        });
      }
      throw error;
    }
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.db.close();
  }
}
