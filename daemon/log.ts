import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { redactSecrets } from '../src/errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Structured log: one JSON object per line, to the daemon's log file and, in the foreground, to stderr. */
export class DaemonLog {
  private fd: number | undefined;

  constructor(
    readonly path: string,
    private readonly toStderr: boolean,
  ) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.fd = openSync(path, 'a', 0o600);
  }

  write(level: LogLevel, event: string, fields: Record<string, unknown> = {}): void {
    const line = `${redactSecrets(JSON.stringify({ time: new Date().toISOString(), level, event, pid: process.pid, ...fields }))}\n`;
    if (this.fd !== undefined) {
      try {
        writeSync(this.fd, line);
      } catch {
        // a full disk must not stop the daemon; stderr may still work
      }
    }
    if (this.toStderr) process.stderr.write(line);
  }

  info(event: string, fields?: Record<string, unknown>): void {
    this.write('info', event, fields);
  }

  warn(event: string, fields?: Record<string, unknown>): void {
    this.write('warn', event, fields);
  }

  error(event: string, fields?: Record<string, unknown>): void {
    this.write('error', event, fields);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
