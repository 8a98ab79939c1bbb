import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { GroupSampler, groupMembers, sampleGroup, sampleIntervalMs, watchGroup, type GroupUsage } from '../src/process/usage.js';
import { until } from './helpers.js';

// The sampler against real process groups: a busy parent with a child in its group, and one alone.

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) if (child.pid !== undefined) killGroup(child.pid);
});

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** A process group of two: a node that spins and holds 32 MB, and a sleeping child of it. */
function busyGroup(): number {
  const script = "require('child_process').spawn('sleep', ['60'], { stdio: 'ignore' }); const b = Buffer.alloc(32 * 1024 * 1024, 1); for (;;) { b[0]++; }";
  const child = spawn(process.execPath, ['-e', script], { detached: true, stdio: 'ignore' });
  children.push(child);
  return child.pid!;
}

describe('process-group sampling', () => {
  it('sums every member of the group: memory, CPU time and a CPU percent since the previous sample', async () => {
    const pgid = busyGroup();
    await until(() => (groupMembers(pgid).length === 2 ? true : undefined), 10_000, 'the group to have both members');
    const sampler = new GroupSampler(pgid);
    const first = await until(async () => {
      const u = await sampler.sample();
      return u && u.rssBytes > 32 * 1024 * 1024 ? u : undefined;
    }, 10_000, 'the buffer to be resident');
    expect(first.processes).toBe(2);
    // CPU time only grows while it spins: waited for, not timed.
    const later = await until(async () => {
      const u = await sampler.sample();
      return u && u.cpuSeconds > first.cpuSeconds ? u : undefined;
    }, 10_000, 'more CPU time');
    expect(later.cpuPercent).toBeGreaterThan(0);
    expect(later.processes).toBe(2);
    killGroup(pgid);
    await until(async () => ((await sampleGroup(pgid)) === undefined ? true : undefined), 10_000, 'the group to be gone');
  });

  it('watchGroup calls back with the group while it lives, and no more once stopped', async () => {
    const pgid = busyGroup();
    const seen: GroupUsage[] = [];
    const stop = watchGroup(pgid, (u) => seen.push(u), 0);
    await until(() => (seen.length >= 2 ? true : undefined), 10_000, 'two samples');
    expect(seen.every((u) => u.processes >= 1 && u.rssBytes > 0)).toBe(true);
    stop();
    const count = seen.length;
    // Bounded wait to show that nothing more comes (the next would be due within a second).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(seen.length).toBe(count);
  });

  it('samples a long run less often: every second, then every 10 s after a minute, every minute after an hour', () => {
    expect([0, 59_999, 60_000, 3_599_999, 3_600_000, 7 * 86_400_000].map(sampleIntervalMs)).toEqual([1000, 1000, 10_000, 10_000, 60_000, 60_000]);
  });
});
