/**
 * The crash campaign in the suite, bounded: 100 short runs submitted to a
 * real qwexd in batches while it is killed with SIGKILL 5 times at random
 * instants (one during a batch submit) and restarted, and while a run fills
 * the project's disk (a tmpfs, as root). scripts/torture.mjs does the work
 * and checks: every job ran exactly once, every run has its exact exit code
 * and its complete log, none is lost. `npm run torture -- --runs N --kills K`
 * runs it bigger.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { ROOT, requireComponent } from './helpers.js';

function canMount(): string | undefined {
  const r = spawnSync('sh', ['-c', 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs "$d" && umount "$d"; s=$?; rmdir "$d"; exit $s'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : `cannot mount a tmpfs to fill (needs root): ${String(r.stderr).trim()}`;
}

describe('the torture test', () => {
  it('100 runs, 5 kills of qwexd (one during a batch submit), 3 of its spawner, a disk that fills: every run exact, none twice, none lost', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_MOUNT', canMount());
    const r = await execa(process.execPath, [join(ROOT, 'scripts', 'torture.mjs'), '--runs', '100', '--kills', '5', '--spawner-kills', '3', '--disk-full'], { reject: false, timeout: 240_000 });
    // The exit status first: when the script failed before its summary, its stderr says why.
    expect(r.exitCode, `torture exited ${r.exitCode}${r.timedOut ? ' (timed out)' : ''}: ${String(r.stderr).slice(-2000)}`).toBe(0);
    const result = JSON.parse(String(r.stdout).trim().split('\n').pop() ?? '{}') as Record<string, number>;
    expect(result).toMatchObject({ runs: 100, exact: 100, lost: 0, startedTwice: 0, missing: 0 });
    expect(result.kills).toBeGreaterThanOrEqual(5);
  }, 300_000);
});
