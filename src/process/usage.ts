import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import pidusage from 'pidusage';
import type { ResourceUsage } from '../protocol.js';

/** How long one scan of /proc serves every group sampled (qwexd samples many runs each second). */
const SCAN_TTL_MS = 500;
let scan: { at: number; groups: Map<number, number[]> } | undefined;

/** Process group -> member pids, from one pass over /proc, reused for SCAN_TTL_MS. */
function procGroups(): Map<number, number[]> {
  if (scan && Date.now() - scan.at < SCAN_TTL_MS) return scan.groups;
  const groups = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // After "pid (comm) ": state ppid pgrp ...
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z') continue;
      const pgrp = Number(fields[2]);
      const members = groups.get(pgrp);
      if (members) members.push(Number(name));
      else groups.set(pgrp, [Number(name)]);
    } catch {
      // exited while we looked
    }
  }
  scan = { at: Date.now(), groups };
  return groups;
}

/** Pids of every process in a process group (a run's whole tree, unless something left it with setsid). */
export function groupMembers(pgid: number): number[] {
  if (process.platform === 'linux') return procGroups().get(pgid) ?? [];
  try {
    const out = execFileSync('ps', ['-o', 'pid=', '-g', String(pgid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return out.split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
  } catch {
    return [];
  }
}

/**
 * CPU and memory of a process group, summed with pidusage. CPU is percent
 * of one core since the previous sample of the same pids (the first sample
 * averages over each process's life). Undefined when the group is gone.
 */
export async function sampleGroup(pgid: number): Promise<(ResourceUsage & { cpuSeconds: number }) | undefined> {
  const pids = groupMembers(pgid);
  if (pids.length === 0) return undefined;
  const results = await Promise.allSettled(pids.map((pid) => pidusage(pid)));
  let cpuPercent = 0;
  let rssBytes = 0;
  let cpuMs = 0;
  let processes = 0;
  for (const result of results) {
    if (result.status !== 'fulfilled') continue;
    cpuPercent += result.value.cpu;
    rssBytes += result.value.memory;
    cpuMs += result.value.ctime;
    processes++;
  }
  if (processes === 0) return undefined;
  return { cpuPercent: Math.round(cpuPercent * 10) / 10, rssBytes, processes, cpuSeconds: cpuMs / 1000 };
}
