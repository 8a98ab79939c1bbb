import { homedir } from 'node:os';
import { payloadEnv } from '../payload.js';
import type { CommandTarget } from '../spec.js';
import type { Attempt } from './attempt.js';
import { DeliveryError } from './delivery-error.js';

/** How long a local command may run before it is stopped (and the attempt failed). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

/**
 * Runs a program on the supervisor's machine (`notify-send`, a script),
 * with the event's fields in its environment (QWEX_RUN_ID, QWEX_RUN_STATUS...,
 * see payload.ts). Without `shell` it runs as argv: `$QWEX_...` references
 * in the arguments are replaced by those fields, nothing else is expanded
 * or interpreted. Exit 0 is a delivery.
 */
export async function runCommand(target: CommandTarget, attempt: Attempt, cwd: string | undefined): Promise<string> {
  const fields = payloadEnv(attempt.payload, attempt.delivery);
  const env = { ...process.env, ...fields };
  const [file, ...args] = target.shell ? ['/bin/sh', '-c', target.command[0] ?? ''] : target.command.map((word) => expand(word, fields));
  const timeout = target.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  // Loaded by the first command delivery: execa and what it brings cost an idle qwexd about 9 MB of memory.
  const { execa } = await import('execa');
  const result = await execa(file!, args, {
    env,
    extendEnv: false,
    cwd: cwd ?? homedir(),
    reject: false,
    timeout,
    forceKillAfterDelay: 5000,
    cancelSignal: attempt.signal,
    stdin: 'ignore',
    maxBuffer: 64 * 1024,
  });
  if (result.exitCode === 0) return 'exit 0';
  const said = String(result.stderr || result.stdout || '').trim().split('\n').pop()?.slice(0, 200);
  const why = result.timedOut ? `did not finish within ${timeout / 1000} s` : result.signal ? `killed by ${result.signal}` : result.exitCode === undefined ? (result.originalMessage ?? result.shortMessage) : `exit ${result.exitCode}`;
  // A program that cannot be found will not appear by retrying for a day; one that fails might succeed later.
  const permanent = result.code === 'ENOENT' || result.exitCode === 127 || result.exitCode === 126;
  throw new DeliveryError(`${target.shell ? 'sh -c' : file}: ${why}${said ? `: ${said}` : ''}`, { permanent });
}

/** `$QWEX_NAME` and `${QWEX_NAME}` in an argument become the event's field (empty when the event has none). */
function expand(word: string, fields: Record<string, string>): string {
  return word.replace(/\$\{?(QWEX_[A-Z0-9_]+)\}?/g, (_whole, name: string) => fields[name] ?? '');
}
