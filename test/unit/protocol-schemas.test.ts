import { describe, expect, it } from 'vitest';
import { methods, notifications } from '../../src/protocol-schemas.js';
import { bindHandlers, describeParamsError } from '../../src/rpc/method-table.js';

/**
 * qwexd builds a method's schemas when first read, so that an idle qwexd
 * holds none it has not used (docs/benchmarks.md, "Idle qwexd"). These
 * check the two halves of that: the table builds each schema once, on
 * demand, and bindHandlers does not read params until a request comes.
 */
describe('protocol schemas are built when first read', () => {
  it('a method table entry builds its schemas on first read and keeps them', () => {
    const get = methods['run.get'];
    expect(get.params).toBe(get.params);
    expect(get.result).toBe(get.result);
    expect(notifications['logs.end']).toBe(notifications['logs.end']);
    // The one in the table is a real check, with the message clients get (English, as zod's classic API says it).
    const parsed = get.params.safeParse({ id: 1 });
    expect(parsed.success).toBe(false);
    expect(describeParamsError(parsed.error!)).toBe('id: Invalid input: expected string, received number');
    expect(methods['run.list'].whenTooLarge).toMatch(/smaller `limit`/);
    expect('whenTooLarge' in methods['run.get']).toBe(false);
  });

  it('bindHandlers reads a method params schema at its first request, not when binding', () => {
    let reads = 0;
    const table = {
      sum: {
        get params() {
          reads++;
          return methods['qwex.hello'].params;
        },
        result: methods['qwex.hello'].result,
        whenTooLarge: 'fewer',
      },
    };
    const bound = bindHandlers(table, { sum: () => ({ protocolVersion: 1, daemonVersion: '0', pid: 1 }) });
    expect(reads).toBe(0);
    expect(bound.sum!.whenTooLarge).toBe('fewer');
    expect(bound.sum!.params.safeParse({ protocolVersion: 1 }).success).toBe(true);
    expect(reads).toBe(1);
    expect(bound.sum!.params.safeParse({ protocolVersion: 'one' }).success).toBe(false);
  });
});
