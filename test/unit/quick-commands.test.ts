import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../client/main.js';
import { parseQuick } from '../../client/quick.js';
import { withBackendDefaults } from '../../client/quick-run.js';
import { BACKENDS } from '../../src/backends/registry.js';

// `qwex ps` and `qwex status` in their plain forms skip the full parser: the options must be those commander gives
// the same command (main.ts: ps has --last defaulting to '20'), and anything unusual must go to commander.
describe('the quick path of qwex ps and qwex status', () => {
  it('takes the plain forms, with the options the full parser would give', () => {
    expect(parseQuick(['ps'])).toEqual({ command: 'ps', options: { last: '20' } });
    expect(parseQuick(['ps', '-a', '--json'])).toEqual({ command: 'ps', options: { all: true, json: true, last: '20' } });
    expect(parseQuick(['ps', '--all', '-n', '5', '--status', 'running,failed'])).toEqual({ command: 'ps', options: { all: true, last: '5', status: 'running,failed' } });
    expect(parseQuick(['ps', '--last', '0', '-n', '3'])).toEqual({ command: 'ps', options: { last: '3' } });
    expect(parseQuick(['status', '019aa011'])).toEqual({ command: 'status', prefix: '019aa011', options: {} });
    expect(parseQuick(['status', '--json', '019aa011'])).toEqual({ command: 'status', prefix: '019aa011', options: { json: true } });
  });

  it('leaves help, other spellings, bad and missing values, and other commands to the full parser', () => {
    for (const args of [
      ['ps', '--help'],
      ['ps', '-h'],
      ['ps', '--last=5'],
      ['ps', '-an', '5'],
      ['ps', '-n'],
      ['ps', '-n', '-a'],
      ['ps', '--status'],
      ['ps', 'extra'],
      ['ps', '--bogus'],
      ['status'],
      ['status', 'a', 'b'],
      ['status', '--help', 'a'],
      ['status', '-x', 'a'],
      ['logs', 'a'],
      ['--json', 'ps'],
      [],
    ]) {
      expect(parseQuick(args), args.join(' ')).toBeUndefined();
    }
  });
});

/** What the full parser (main.ts, with commander) hands `qwex run`'s module: its arguments and options; or the error it stops with. */
async function fullParse(args: string[]): Promise<{ args: unknown; options: unknown } | { error: string }> {
  let got: { args: unknown; options: unknown } | undefined;
  const program = buildProgram(() => async (...received: unknown[]) => {
    got = { args: received[0], options: received[1] };
  });
  // Help and usage text are not what these tests look at (each command copied its output settings when it was made).
  const quiet = (command: Command): void => {
    command.configureOutput({ writeErr: () => {}, writeOut: () => {} });
    command.commands.forEach(quiet);
  };
  quiet(program);
  try {
    await program.parseAsync(['node', 'qwex', ...args]);
  } catch (error) {
    return { error: (error as Error).message };
  }
  return got ?? { error: 'no action ran' };
}

// `qwex run` in its plain forms skips the full parser too: the arguments and options given to the run command must be
// exactly those commander gives (its defaults included), which these tests check against commander itself.
describe('the quick path of qwex run', () => {
  const flags = BACKENDS.flatMap((b) => b.flags);

  it('takes the plain forms, with the arguments and options the full parser gives', async () => {
    for (const args of [
      ['run', 'true'],
      ['run', '-d', 'true'],
      ['run', '--detach', '--json', 'true'],
      ['run', '-d', 'true', '--json'],
      ['run', '-d', '--', 'python', 'train.py', '--lr', '0.1'],
      ['run', '--', '--', 'x'],
      ['run', '-d', '--', 'ls', '-l', '--', 'x'],
      ['run', '-q', 'sh', '-c', 'exit 3'],
      ['run', '--quiet', '--shell', 'echo $HOME | wc -c'],
      ['run', '-e', 'A=1', '--env', 'B', '-e', 'C=', 'env'],
      ['run', '-b', 'docker', '--image', 'python:3.12', '--cpus', '2', '--memory', '4g', '--gpus', 'all', '--network', 'none', '--user', '1000', 'true'],
      ['run', '--mount', '/data:/data:ro', '--mount', '/x:/y', '-b', 'docker', 'ls'],
      ['run', '--backend', 'local', '-w', 'out,models', '--watch', 'results', 'true'],
      ['run', '--name', 'train', '--timeout', '90s', '--grace', '5s', 'true'],
      ['run', '--name', '', 'true'],
      ['run', '--snapshot', '--in-place', 'true'],
      ['run', '-d', '--after', '019aa011,019aa012', 'true'],
      ['run', '--after-any', '019aa011', 'true'],
      ['run', '--notify', 'team', '--notify', 'mailto:a@example.com', 'true'],
      ['run', '-j', 'train', '--set', 'lr=0.1', '--grid', 'seed=1,2', '--grid', 'bs=8,16'],
      ['run', '--job', 'train', 'extra', '--set', 'x=1'],
      ['run', '-d', '-d', 'true'],
      ['run', 'help'],
      ['run'],
      ['run', '-d'],
      ['run', '--'],
    ]) {
      const quick = parseQuick(args);
      expect(quick, args.join(' ')).toBeDefined();
      if (quick?.command !== 'run') throw new Error(`${args.join(' ')}: taken as ${quick?.command}`);
      expect({ args: quick.args, options: withBackendDefaults(quick.options, flags) }, args.join(' ')).toEqual(await fullParse(args));
    }
  });

  it('leaves help, combined and = spellings, option-like values, unknown options and backends\' own flags to the full parser', () => {
    for (const args of [
      ['run', '--help', 'true'],
      ['run', '-h'],
      ['run', '-dq', 'true'],
      ['run', '-bdocker', 'true'],
      ['run', '--backend=docker', 'true'],
      ['run', '--name', '-x', 'true'],
      ['run', '-e'],
      ['run', '-e', '--json', 'true'],
      ['run', '--no-color', 'true'],
      ['run', '--pull', 'always', 'true'],
      ['run', '--pull', 'sometimes', 'true'],
      ['run', '--bogus', 'true'],
      ['run', '-', 'x'],
      ['run', '-5'],
      ['run', '--toString', 'true'],
      ['--no-color', 'run', 'true'],
      ...flags.map((flag) => ['run', flag.flags.split(' ')[0]!, ...(flag.flags.includes('<') ? ['x'] : []), 'true']),
    ]) {
      expect(parseQuick(args), args.join(' ')).toBeUndefined();
    }
  });

  it('adds true for each backend flag whose absence is a value (--no-X), and keeps what was given', () => {
    const negated = flags.filter((flag) => flag.flags.startsWith('--no-'));
    expect(negated.length).toBeGreaterThan(0);
    const options = withBackendDefaults({ detach: true }, flags);
    for (const flag of negated) expect(options).toHaveProperty(flag.key, true);
    expect(withBackendDefaults({ [negated[0]!.key]: false }, flags)).toHaveProperty(negated[0]!.key, false);
  });
});
