import { describe, expect, it } from 'vitest';
import { parseQuick } from '../../client/quick.js';

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
