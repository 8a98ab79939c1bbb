import { readdirSync, readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import type { ResourceUsage } from '../protocol.js';
import { childProcess } from './info.js';

/** A process group's CPU and memory: `cpuSeconds` is the CPU time its members have used, their reaped children's included. */
export type GroupUsage = ResourceUsage & { cpuSeconds: number };

/** How long one pass over /proc serves every group asked about (a listing of many runs, the groups due in one tick). */
const SCAN_TTL_MS = 250;
/** Clock ticks per second of /proc/PID/stat's times: USER_HZ, 100 on every Linux architecture Node runs on. */
const USER_HZ = 100;
let pageSize: number | undefined;

interface ProcSample {
  pid: number;
  /** utime + stime + cutime + cstime, in clock ticks. */
  ticks: number;
  /** When it started, in clock ticks since boot. */
  start: number;
  rssBytes: number;
}

interface Scan {
  /** When it was taken, in clock ticks since boot (from /proc/uptime), the scale of ProcSample.start. */
  uptimeTicks: number;
  /** Date.now() when it was taken, for the cache. */
  at: number;
  groups: Map<number, ProcSample[]>;
}

let lastScan: Scan | undefined;

/**
 * One pass over /proc: every live process's group, CPU time, start and
 * resident memory from its stat file (one read per process), grouped by
 * process group. Reused for SCAN_TTL_MS, so that however many runs are
 * sampled in a tick, /proc is walked once.
 */
function scanProc(now = Date.now()): Scan {
  if (lastScan && now - lastScan.at < SCAN_TTL_MS) return lastScan;
  pageSize ??= readPageSize();
  const uptimeTicks = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * USER_HZ;
  const groups = new Map<number, ProcSample[]>();
  for (const name of readdirSync('/proc')) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue; // not a pid
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'latin1');
    } catch {
      continue; // exited while we looked
    }
    // After "pid (comm) ", which may hold spaces and parentheses: state(0) ppid(1) pgrp(2) ... utime(11) stime(12)
    // cutime(13) cstime(14) ... starttime(19) vsize(20) rss(21, in pages).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (f[0] === 'Z' || f[0] === 'X') continue;
    const pgrp = Number(f[2]);
    const sample: ProcSample = {
      pid: Number(name),
      ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
      start: Number(f[19]),
      rssBytes: Number(f[21]) * pageSize,
    };
    const members = groups.get(pgrp);
    if (members) members.push(sample);
    else groups.set(pgrp, [sample]);
  }
  lastScan = { uptimeTicks, at: now, groups };
  return lastScan;
}

/** The page size, from the kernel's auxiliary vector (AT_PAGESZ): no process to spawn for it. */
function readPageSize(): number {
  const AT_PAGESZ = 6n;
  try {
    const auxv = readFileSync('/proc/self/auxv');
    const le = endianness() === 'LE';
    // Pairs of native-word (64-bit here) type and value, up to AT_NULL.
    for (let at = 0; at + 16 <= auxv.length; at += 16) {
      const type = le ? auxv.readBigUInt64LE(at) : auxv.readBigUInt64BE(at);
      if (type === 0n) break;
      if (type === AT_PAGESZ) return Number(le ? auxv.readBigUInt64LE(at + 8) : auxv.readBigUInt64BE(at + 8));
    }
  } catch {
    // no /proc/self/auxv: the usual size
  }
  return 4096;
}

/** Pids of every process in a process group (a run's whole tree, unless something left it with setsid). */
export function groupMembers(pgid: number): number[] {
  if (process.platform === 'linux') return (scanProc().groups.get(pgid) ?? []).map((p) => p.pid);
  try {
    const out = childProcess().execFileSync('ps', ['-o', 'pid=', '-g', String(pgid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return out.split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when the group is empty; sampling is a courtesy and must not fail a look at a run
  }
}

/**
 * Successive samples of one process group. CPU is percent of one core
 * since this sampler's previous sample (the first averages over the
 * members' lives), so each follower of a run keeps its own.
 */
export class GroupSampler {
  private previous: { uptimeTicks: number; ticks: Map<number, number> } | undefined;

  constructor(readonly pgid: number) {}

  /** Undefined when nothing of the group is left. */
  async sample(): Promise<GroupUsage | undefined> {
    if (process.platform !== 'linux') return samplePortably(this.pgid);
    return this.fromScan(scanProc());
  }

  private fromScan(scan: Scan): GroupUsage | undefined {
    const members = scan.groups.get(this.pgid);
    if (!members || members.length === 0) return undefined;
    let rssBytes = 0;
    let ticks = 0;
    let used = 0;
    let firstStart = Infinity;
    const now = new Map<number, number>();
    for (const p of members) {
      rssBytes += p.rssBytes;
      ticks += p.ticks;
      now.set(p.pid, p.ticks);
      firstStart = Math.min(firstStart, p.start);
      // A member new since the previous sample started after it: all its time falls in between.
      used += p.ticks - (this.previous?.ticks.get(p.pid) ?? 0);
    }
    const elapsed = this.previous ? scan.uptimeTicks - this.previous.uptimeTicks : scan.uptimeTicks - firstStart;
    this.previous = { uptimeTicks: scan.uptimeTicks, ticks: now };
    const cpuPercent = elapsed > 0 ? Math.max(0, (used / elapsed) * 100) : 0;
    return { cpuPercent: Math.round(cpuPercent * 10) / 10, rssBytes, processes: members.length, cpuSeconds: ticks / USER_HZ };
  }
}

/** One look at a process group's CPU (averaged over its members' lives) and memory. Undefined when the group is gone. */
export function sampleGroup(pgid: number): Promise<GroupUsage | undefined> {
  return new GroupSampler(pgid).sample();
}

/** Where there is no /proc (macOS): ps for the members, pidusage for each. */
async function samplePortably(pgid: number): Promise<GroupUsage | undefined> {
  const pids = groupMembers(pgid);
  if (pids.length === 0) return undefined;
  const { default: pidusage } = await import('pidusage');
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

/**
 * How long a run waits between samples at a given age: every second for
 * its first minute, every 10 s up to an hour, every minute after. A
 * week-long run costs a few thousand samples, and a hundred long runs cost
 * qwexd a /proc pass every few seconds rather than a hundred a second.
 */
export function sampleIntervalMs(ageMs: number): number {
  if (ageMs < 60_000) return 1000;
  if (ageMs < 3_600_000) return 10_000;
  return 60_000;
}

interface Watch {
  sampler: GroupSampler;
  since: number;
  due: number;
  onSample: (usage: GroupUsage) => void;
  busy: boolean;
}

/** Samples due within this long of a tick are taken in it, so that groups started close together share passes. */
const COALESCE_MS = 100;
const watches = new Set<Watch>();
let timer: NodeJS.Timeout | undefined;
let timerAt = Infinity;

/**
 * Samples a process group at the rhythm of sampleIntervalMs (the first
 * after `firstMs`), calling `onSample` while anything of it is left. Every
 * group watched in this process shares one timer and, per tick, one pass
 * over /proc. Returns the function that stops watching.
 */
export function watchGroup(pgid: number, onSample: (usage: GroupUsage) => void, firstMs = 200): () => void {
  const now = Date.now();
  const watch: Watch = { sampler: new GroupSampler(pgid), since: now, due: now + firstMs, onSample, busy: false };
  watches.add(watch);
  schedule();
  return () => {
    watches.delete(watch);
    if (watches.size === 0) schedule();
  };
}

function schedule(): void {
  let next = Infinity;
  for (const w of watches) next = Math.min(next, w.due);
  if (next === timerAt) return;
  if (timer) clearTimeout(timer);
  timer = undefined;
  timerAt = next;
  if (next === Infinity) return;
  // Unref'd: sampling never keeps a process alive.
  timer = setTimeout(tick, Math.max(0, next - Date.now()));
  timer.unref();
}

function tick(): void {
  timer = undefined;
  timerAt = Infinity;
  const now = Date.now();
  for (const w of watches) {
    if (w.due > now + COALESCE_MS || w.busy) continue;
    w.due = now + sampleIntervalMs(now - w.since);
    w.busy = true;
    w.sampler.sample().then(
      (usage) => {
        w.busy = false;
        if (usage && watches.has(w)) w.onSample(usage);
      },
      () => {
        // A member exited between listing and reading it: the next sample counts the rest.
        w.busy = false;
      },
    );
  }
  schedule();
}
