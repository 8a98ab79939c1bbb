import { describe, expect, it } from 'vitest';
import { commandSpec } from '../../src/config/command.js';
import { QwexError, redactSecrets } from '../../src/errors.js';
import { distinctPrefixLength, isRunId } from '../../src/ids.js';
import { newRunId } from '../../src/new-run-id.js';
import { canTransition, displayCommand, exitCodeOf, transition, type Run, type RunStatus } from '../../src/run/model.js';

function pendingRun(): Run {
  return {
    version: 1,
    id: newRunId(),
    project: '/p',
    job: { command: ['true'], shell: false, cwd: '/p', env: {}, backend: 'local', backendOptions: {}, artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 1 }, killGraceMs: 1000 },
    status: 'pending',
    createdAt: new Date().toISOString(),
    exitCode: null,
    signal: null,
    backend: { name: 'local' },
    metadata: { host: 'h', user: 'u', qwexVersion: '0' },
  };
}

describe('run state machine', () => {
  it('allows only the legal transitions', () => {
    const all: RunStatus[] = ['pending', 'running', 'succeeded', 'failed', 'cancelled', 'lost'];
    const legal = all.flatMap((from) => all.filter((to) => canTransition(from, to)).map((to) => `${from}->${to}`));
    expect(legal.sort()).toEqual([
      'pending->cancelled', 'pending->failed', 'pending->lost', 'pending->running',
      'running->cancelled', 'running->failed', 'running->lost', 'running->succeeded',
    ]);
  });

  it('stamps start and finish times and refuses to reopen a finished run', () => {
    const running = transition(pendingRun(), 'running');
    expect(running.startedAt).toBeDefined();
    const done = transition(running, 'succeeded', { exitCode: 0 });
    expect(done.finishedAt).toBeDefined();
    expect(() => transition(done, 'running')).toThrowError(QwexError);
    expect(() => transition(done, 'failed')).toThrowError(/cannot go from succeeded to failed/);
  });

  it('maps outcomes to exit codes', () => {
    const base = transition(pendingRun(), 'running');
    expect(exitCodeOf(transition(base, 'succeeded', { exitCode: 0 }))).toBe(0);
    expect(exitCodeOf(transition(base, 'failed', { exitCode: 3 }))).toBe(3);
    expect(exitCodeOf(transition(base, 'failed', { signal: 'SIGKILL' }))).toBe(137);
    expect(exitCodeOf(transition(base, 'cancelled', { signal: 'SIGTERM' }))).toBe(130);
    expect(exitCodeOf(transition(base, 'lost'))).toBe(125);
  });
});

describe('run ids', () => {
  it('are UUIDv7 and sort in creation order', () => {
    const ids = Array.from({ length: 200 }, () => newRunId());
    expect(ids.every(isRunId)).toBe(true);
    expect([...ids].sort()).toEqual(ids);
  });

  it('the listing prefix grows until every id is distinct', () => {
    expect(distinctPrefixLength(['019aa011-7c2e-7000-8000-000000000000'])).toBe(13);
    expect(distinctPrefixLength(['019aa011-7c2e-7000-8000-000000000000', '019aa011-7c2e-7001-8000-000000000000'])).toBe(18);
  });
});

describe('commands', () => {
  it('argv unless a single argument has shell syntax, or --shell', () => {
    expect(commandSpec(['python', 'train.py', '--lr', '0.1'])).toEqual({ command: ['python', 'train.py', '--lr', '0.1'], shell: false });
    expect(commandSpec(['python'])).toEqual({ command: ['python'], shell: false });
    expect(commandSpec(['python train.py > log'])).toEqual({ command: ['python train.py > log'], shell: true });
    expect(commandSpec(['echo', 'a'], { shell: true })).toEqual({ command: ['echo a'], shell: true });
    expect(displayCommand({ command: ['echo', 'a b', "it's"], shell: false })).toBe(`echo 'a b' 'it'\\''s'`);
  });

  it('redacts secret-looking assignments and URL passwords from text', () => {
    expect(redactSecrets('run GITHUB_TOKEN=abc PATH=/bin')).toBe('run GITHUB_TOKEN=*** PATH=/bin');
    expect(redactSecrets('clone https://user:pa55@host/repo')).toBe('clone https://user:***@host/repo');
  });
});
