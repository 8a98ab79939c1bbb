#!/usr/bin/env node
// qwex's benchmark: every comparison side by side in one run, A B A B
// interleaved, medians, and the ratio to a peer measured in the same run.
// It installs nothing; missing peers are named with how to install them.
//
//   npm run bench                 # the full run (a few minutes)
//   node bench/bench.mjs --smoke  # tiny counts: checks that it works (used by the tests)
//
// Writes bench/results/<date>-<host>.md and .json (or --out DIR).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, hostname, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const CLI = join(ROOT, 'dist', 'client', 'cli.js');
const FLOOD = join(ROOT, 'test', 'fixtures', 'flood.mjs');
const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const outDir = args.includes('--out') ? resolve(args[args.indexOf('--out') + 1]) : join(ROOT, 'bench', 'results');
const only = args.includes('--only') ? new Set(args[args.indexOf('--only') + 1].split(',')) : undefined;

const N = smoke
  ? { startupReps: 3, jobs: 10, jobReps: 1, drain: 20, drainReps: 1, latencyLines: 20, throughputBytes: 8e6, active: 4, sampleMs: 1000, settleMaxS: 3 }
  : { startupReps: 15, jobs: 200, jobReps: 3, drain: 1000, drainReps: 2, latencyLines: 200, throughputBytes: 1e9, active: 100, sampleMs: 5000, settleMaxS: 30 };

if (!existsSync(CLI)) {
  console.error('bench: dist/ is missing; run `npm run build` first');
  process.exit(2);
}

const base = mkdtempSync(join(tmpdir(), 'qwex-bench-'));
const project = join(base, 'project');
mkdirSync(project, { recursive: true });
const env = {
  ...process.env,
  QWEX_STATE_DIR: join(base, 'state'),
  QWEX_RUNTIME_DIR: join(base, 'run'),
  NO_COLOR: '1',
  TS_SOCKET: join(base, 'tsp.sock'),
  TMPDIR: join(base, 'tsp-tmp'),
  NQDIR: join(base, 'nq'),
};
delete env.QWEX_NO_DAEMON;
mkdirSync(env.TMPDIR, { recursive: true });

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const peers = { tsp: have('tsp'), nq: have('nq') };
const missing = Object.entries(peers).filter(([, ok]) => !ok).map(([name]) => name);
if (missing.length) console.error(`bench: peers missing: ${missing.join(', ')} (apt-get install task-spooler nq hyperfine); their comparisons are skipped`);

const sections = [];
const loadAtStart = loadavg();
const goals = [];

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}
function sh(script, extraEnv = {}) {
  const r = spawnSync('sh', ['-c', script], { cwd: project, env: { ...env, ...extraEnv }, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`bench: \`${script.slice(0, 120)}\` exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}
function timed(fn) {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}
// CPU time (user + system), so that results stay comparable on a busy machine, where wall time mostly measures the
// others' load. Linux only (/proc); NaN elsewhere. A process's own time, and with `children` the time of the children
// it has waited for (and theirs, recursively): what the commands this script runs through `sh` cost, servers included
// as long as they were reaped inside that tree.
const TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  } catch {
    return 100;
  }
})();
function cpuSeconds(pid = 'self', { own = true, children = true } = {}) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After "pid (comm) ": state(0) ... utime(11) stime(12) cutime(13) cstime(14), in clock ticks.
    return ((own ? Number(f[11]) + Number(f[12]) : 0) + (children ? Number(f[13]) + Number(f[14]) : 0)) / TICKS;
  } catch {
    return NaN;
  }
}
/** Wall time and the CPU time of what `fn` ran through sh (the bench's reaped children), plus `extraCpu()`'s growth (a server's). */
function measured(fn, extraCpu = () => 0) {
  const c0 = cpuSeconds('self', { own: false });
  const x0 = extraCpu();
  const ms = timed(fn);
  return { ms, cpu: cpuSeconds('self', { own: false }) - c0 + (extraCpu() - x0) };
}
/** Pids of the processes named `comm` whose environment has NAME=VALUE (a peer's server, forked off and not ours to reap). */
function pidsByEnv(comm, name, value) {
  const found = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== comm) continue;
      if (readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0').includes(`${name}=${value}`)) found.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}
/** Runs a tsp script (its server starts inside it), with the server's CPU counted; then stops the server. */
function tspMeasured(script) {
  const server = () => pidsByEnv('tsp', 'TS_SOCKET', env.TS_SOCKET).reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  try {
    return measured(() => sh(script), server);
  } finally {
    sh('tsp -K >/dev/null 2>&1 || true');
  }
}
/**
 * qwexd's CPU time so far, its reaped children included; and its shims' spawner's (libexec/qwex-spawner, qwexd's
 * child, alive while qwexd is), with the shims it reaped and the commands they reaped: every process of a run.
 */
function daemonCpu() {
  try {
    const pid = daemonPid();
    return cpuSeconds(pid) + childrenOf(pid).reduce((sum, child) => sum + cpuSeconds(child), 0);
  } catch {
    return NaN;
  }
}
/** The live children of `pid`, from /proc (a child that ended and was reaped is in the parent's own figures). */
function childrenOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
const qwex = (a) => `node ${JSON.stringify(CLI)} ${a}`;
function daemon(start, concurrency, extraEnv = {}) {
  sh(`${qwex('daemon stop')} >/dev/null 2>&1 || true`);
  if (start) sh(`${qwex(`daemon start --concurrency ${concurrency}`)} >/dev/null 2>&1`, extraEnv);
}
function daemonPid() {
  return Number(readFileSync(join(env.QWEX_RUNTIME_DIR, 'qwexd.pid'), 'utf8'));
}
/**
 * Runs each variant `reps` times, interleaved (A B A B ...), and returns medians in ms. A variant returns its wall
 * time in ms, or { ms, cpu } with the CPU seconds it cost (then `cpu` is their median too).
 */
function interleave(variants, reps) {
  const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  const cpus = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (let r = 0; r < reps; r++) {
    for (const [name, fn] of Object.entries(variants)) {
      const result = fn();
      times[name].push(typeof result === 'number' ? result : result.ms);
      cpus[name].push(typeof result === 'number' ? NaN : result.cpu);
    }
  }
  return Object.fromEntries(Object.entries(times).map(([k, v]) => [k, { median: median(v), runs: v, cpu: median(cpus[k]) }]));
}
function fmt(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}
function goal(measure, goalText, value, ok) {
  goals.push({ measure, goal: goalText, value, met: ok });
}
const want = (name) => !only || only.has(name);

// 1. CLI start-up
if (want('startup')) {
  daemon(false);
  const bigState = join(base, 'state-100k');
  // 100,000 runs in the index of another state directory, over three projects.
  const { RunIndex } = await import(join(ROOT, 'dist', 'src', 'store', 'run-index.js'));
  const { newRunId } = await import(join(ROOT, 'dist', 'src', 'new-run-id.js'));
  const index = RunIndex.open(join(bigState, 'index.db'));
  const now = new Date().toISOString();
  const rows = [];
  for (let i = 0; i < 100_000; i++) {
    const p = i % 3 === 0 ? project : `/elsewhere/p${i % 3}`;
    const id = newRunId();
    rows.push({
      runDir: join(p, '.qwex', 'runs', id),
      run: { version: 1, id, project: p, job: { command: ['true'], shell: false }, status: 'succeeded', createdAt: now, startedAt: now, finishedAt: now, exitCode: 0, signal: null, backend: { name: 'local' } },
    });
  }
  index.upsertMany(rows);
  index.close();
  const run = (cmd, e = {}) => () => measured(() => sh(`${cmd} >/dev/null`, e));
  const res = interleave(
    {
      'node -e 0': run('node -e 0'),
      'qwex --version': run(qwex('--version')),
      'qwex ps (empty)': run(qwex('ps -n 20')),
      'qwex ps (100k runs)': run(qwex('ps -n 20'), { QWEX_STATE_DIR: bigState }),
    },
    N.startupReps,
  );
  const baseMs = res['node -e 0'].median;
  sections.push({
    name: 'CLI start-up',
    unit: 'ms (median wall time)',
    cpuUnit: 'CPU ms',
    rows: Object.entries(res).map(([k, v]) => ({ variant: k, value: v.median, ratio: v.median / baseMs, peer: 'node -e 0', cpu: v.cpu * 1000, cpuRatio: v.cpu / res['node -e 0'].cpu })),
  });
  for (const k of ['qwex --version', 'qwex ps (100k runs)']) {
    goal(`${k} vs node -e 0`, '≤ 1.3×', `${(res[k].median / baseMs).toFixed(2)}×`, res[k].median / baseMs <= 1.3);
  }
  sections.nodeMs = baseMs;
  sections.nodeCpu = res['node -e 0'].cpu;
}

// 2. N jobs of `true`, submitted and waited for
if (want('jobs')) {
  const n = N.jobs;
  const jobsFile = join(base, 'jobs.txt');
  writeFileSync(jobsFile, 'true\n'.repeat(n));
  const concurrency = cpus().length;
  const submitAndWait = () => measured(() => sh(`${qwex(`submit ${jobsFile}`)} > ids && ${qwex('wait $(cat ids)')}`), daemonCpu);
  const batch = (extraEnv) => () => {
    daemon(true, concurrency, extraEnv);
    return submitAndWait();
  };
  const variants = {
    'qwex submit (batch) + wait': batch({}),
    'qwex submit (batch) + wait, QWEX_FSYNC=0': batch({ QWEX_FSYNC: '0' }),
    'qwex run -d (one process each) + wait': () => {
      daemon(true, concurrency);
      return measured(() => sh(`: > ids; i=0; while [ $i -lt ${n} ]; do ${qwex('run -d true')} >> ids; i=$((i+1)); done; ${qwex('wait $(cat ids)')}`), daemonCpu);
    },
  };
  if (peers.tsp) variants[`tsp (${'1 slot, its default'})`] = () => tspMeasured(`i=0; while [ $i -lt ${n} ]; do tsp true >/dev/null; i=$((i+1)); done; tsp -w`);
  // nq's jobs are forked off and reaped by init: only its client side could be counted, so its CPU is not shown.
  if (peers.nq) variants['nq'] = () => timed(() => sh(`rm -rf "$NQDIR"; i=0; while [ $i -lt ${n} ]; do nq -q true; i=$((i+1)); done; nq -w`));
  const res = interleave(variants, N.jobReps);
  daemon(false);
  const tspKey = Object.keys(res).find((k) => k.startsWith('tsp'));
  const peer = peers.tsp ? res[tspKey].median : NaN;
  const peerCpu = peers.tsp ? res[tspKey].cpu : NaN;
  const nodeN = (sections.nodeMs ?? NaN) * n;
  const per1000 = (cpu) => (cpu / n) * 1000;
  const rows = Object.entries(res).map(([k, v]) => ({ variant: k, value: v.median, ratio: v.median / peer, peer: 'tsp', cpu: per1000(v.cpu), cpuRatio: v.cpu / peerCpu }));
  const nodeCpuN = (sections.nodeCpu ?? NaN) * n;
  rows.push({ variant: `${n} × node -e 0 (reference)`, value: nodeN, ratio: nodeN / peer, peer: 'tsp', cpu: per1000(nodeCpuN), cpuRatio: nodeCpuN / peerCpu });
  sections.push({ name: `${n} jobs of \`true\`, submitted and waited for (qwexd concurrency ${concurrency})`, unit: 'ms (median)', cpuUnit: 'CPU s per 1,000 jobs', rows });
  const batch0 = res['qwex submit (batch) + wait'];
  goal(`${n} jobs, batch submit + wait vs tsp`, '< 1.0× (first step: ≤ 2×)', `${(batch0.median / peer).toFixed(2)}× (CPU ${(batch0.cpu / peerCpu).toFixed(2)}×)`, batch0.median / peer < 1);
  const perProcess = res['qwex run -d (one process each) + wait'];
  goal(`${n} jobs, one CLI process each vs ${n} × node -e 0`, '≤ 1.3×', `${(perProcess.median / nodeN).toFixed(2)}× (CPU ${(perProcess.cpu / nodeCpuN).toFixed(2)}×)`, perProcess.median / nodeN <= 1.3);
}

// 3. queued jobs drained with concurrency 2
if (want('drain')) {
  const n = N.drain;
  const jobsFile = join(base, 'drain.txt');
  writeFileSync(jobsFile, 'true\n'.repeat(n));
  const drained = (extraEnv) => () => {
    daemon(true, 2, extraEnv);
    const result = measured(() => sh(`${qwex(`submit ${jobsFile}`)} > ids && ${qwex('wait $(cat ids)')}`), daemonCpu);
    daemon(false);
    return result;
  };
  const variants = {
    'qwexd (concurrency 2)': drained({}),
    'qwexd (concurrency 2), QWEX_FSYNC=0': drained({ QWEX_FSYNC: '0' }),
  };
  if (peers.tsp) variants['tsp -S 2'] = () => tspMeasured(`tsp -S 2; i=0; while [ $i -lt ${n} ]; do tsp true >/dev/null; i=$((i+1)); done; while tsp | grep -Eq ' (running|queued) '; do sleep 0.01; done`);
  const res = interleave(variants, N.drainReps);
  const peerCpu = peers.tsp ? res['tsp -S 2'].cpu : NaN;
  const rows = Object.entries(res).map(([k, v]) => ({
    variant: k,
    value: (n / v.median) * 1000,
    ratio: peers.tsp ? res['tsp -S 2'].median / v.median : NaN,
    peer: 'tsp -S 2',
    cpu: (v.cpu / n) * 1000,
    cpuRatio: v.cpu / peerCpu,
  }));
  sections.push({ name: `${n} queued jobs of \`true\`, enqueued and drained`, unit: 'jobs per second (higher is better; ratio = qwex/peer throughput)', cpuUnit: 'CPU s per 1,000 jobs', rows });
  if (peers.tsp) {
    const r = res['tsp -S 2'].median / res['qwexd (concurrency 2)'].median;
    goal(`${n} jobs drained, concurrency 2 vs tsp -S 2`, '≥ 1.0× its jobs/s (first step: ≥ 0.5×)', `${r.toFixed(2)}× (CPU ${(res['qwexd (concurrency 2)'].cpu / peerCpu).toFixed(2)}×)`, r >= 1);
  }
}

// 4. log follow latency and throughput
if (want('attach')) {
  daemon(true, 4);
  const lines = N.latencyLines;
  const script = `let i=0;const t=setInterval(()=>{console.log(String(performance.timeOrigin+performance.now()));if(++i>=${lines})clearInterval(t)},10)`;
  const id = sh(qwex(`run -d -- node -e ${JSON.stringify(script).replace(/\$/g, '\\$')}`)).trim();
  const latencies = await new Promise((resolveLatency, reject) => {
    const child = spawn('node', [CLI, 'attach', id], { cwd: project, env, stdio: ['ignore', 'pipe', 'ignore'] });
    const seen = [];
    let buf = '';
    child.stdout.on('data', (chunk) => {
      const now = performance.timeOrigin + performance.now();
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const stamp = Number(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (Number.isFinite(stamp)) seen.push(now - stamp);
      }
    });
    child.on('exit', () => resolveLatency(seen));
    child.on('error', reject);
  });
  // The attacher joins a little after the run starts: lines written before it joined are replays, not live.
  const live = latencies.slice(Math.floor(latencies.length / 4));
  const p50 = median(live);
  const p99 = percentile(live, 99);
  const bytes = N.throughputBytes;
  const tid = sh(qwex(`run -d -- node ${FLOOD} ${bytes}`)).trim();
  sh(qwex(`wait ${tid}`));
  const log = join(project, '.qwex', 'runs', tid, 'stdout.log');
  // Both read the same bytes into a pipe that this process drains, as a terminal or a pager would.
  const drainMs = (cmd, cmdArgs) =>
    new Promise((resolveTime, reject) => {
      const t = process.hrtime.bigint();
      const child = spawn(cmd, cmdArgs, { cwd: project, env, stdio: ['ignore', 'pipe', 'ignore'] });
      let got = 0;
      child.stdout.on('data', (chunk) => (got += chunk.length));
      child.on('error', reject);
      child.on('close', () => (got === bytes ? resolveTime(Number(process.hrtime.bigint() - t) / 1e6) : reject(new Error(`bench: read ${got} of ${bytes} bytes`))));
    });
  const attachRuns = [];
  const catRuns = [];
  // Once untimed first, so that every timed read finds the file in the page cache: the first read after the run wrote
  // it may go to the disk (seen: attach 0.30x cat in one full run, 0.69-0.82x in the others), whichever reader it is.
  await drainMs('cat', [log]);
  for (let i = 0; i < 3; i++) {
    attachRuns.push(await drainMs('node', [CLI, 'attach', tid]));
    catRuns.push(await drainMs('cat', [log]));
  }
  const attachMs = median(attachRuns);
  const catMs = median(catRuns);
  rmSync(log, { force: true });
  daemon(false);
  const mbps = (ms) => (bytes / 1e6 / (ms / 1000)).toFixed(0);
  sections.push({
    name: 'Log follow (qwex attach)',
    unit: 'as noted',
    rows: [
      { variant: 'latency, child writes a line → attach prints it: median', value: p50, unitNote: 'ms' },
      { variant: 'latency: 99th percentile', value: p99, unitNote: 'ms' },
      { variant: `throughput: qwex attach replaying a ${bytes / 1e6} MB log into a pipe (MB/s)`, value: Number(mbps(attachMs)), ratio: catMs / attachMs, peer: 'cat of the same bytes' },
      { variant: 'cat of the same file into a pipe (MB/s)', value: Number(mbps(catMs)) },
    ],
  });
  goal('attach latency, 99th percentile', '< 50 ms', `${p99.toFixed(1)} ms`, p99 < 50);
  goal('attach throughput vs cat', '≥ 0.5×', `${(catMs / attachMs).toFixed(2)}×`, catMs / attachMs >= 0.5);
}

// 5. qwexd memory and CPU
if (want('daemon')) {
  const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
  /** Resident and proportional set size (shared pages divided among their sharers), in bytes. */
  const memory = (pid) => {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? NaN) * 1024;
    return { rss: kb('Rss'), pss: kb('Pss') };
  };
  const sample = async (pid) => {
    const t0 = cpuSeconds(pid, { children: false });
    await new Promise((r) => setTimeout(r, N.sampleMs));
    return { rss: rss(pid), cpu: ((cpuSeconds(pid, { children: false }) - t0) / (N.sampleMs / 1000)) * 100 };
  };
  /**
   * The shims of this benchmark's runs: the compiled one or perl running the script, by their --run-dir; or the
   * spawner's built-in one (named qwex-shim, with the spawner's command line), by its working directory, the run's.
   */
  const shims = () => {
    const found = [];
    const ours = (path) => path.startsWith(join(project, '.qwex'));
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
        const builtIn = readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'qwex-shim' && args.some((a) => /qwex-spawner$/.test(a));
        if (builtIn ? ours(readlinkSync(`/proc/${entry}/cwd`)) : args.some((a) => /qwex-shim(\.pl)?$/.test(a)) && args.some(ours)) found.push(Number(entry));
      } catch {
        // gone meanwhile
      }
    }
    return found;
  };
  daemon(true, N.active);
  const pid = daemonPid();
  await new Promise((r) => setTimeout(r, 1000));
  const idle = await sample(pid);
  const idleMemory = memory(pid);
  // Idle means doing nothing for a while: V8 gives back the young generation it grew while loading modules only
  // once its memory reducer runs, some seconds after start. Read again once RSS has stopped falling (3 readings a
  // second apart without a drop, at most 30 s); both figures are reported.
  let settled = idleMemory;
  for (let t = 0, still = 0; t < N.settleMaxS && still < 3; t++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = memory(pid);
    still = now.rss < settled.rss ? 0 : still + 1;
    if (now.rss < settled.rss) settled = now;
  }
  writeFileSync(join(base, 'active.txt'), 'sleep 60\n'.repeat(N.active));
  const ids = sh(`${qwex(`submit ${join(base, 'active.txt')}`)}`).trim().split('\n');
  // Measured once every run has started (starting a hundred costs more than following them), after a settling second.
  const startBy = Date.now() + 30_000;
  while (shims().length < N.active && Date.now() < startBy) await new Promise((r) => setTimeout(r, 200));
  await new Promise((r) => setTimeout(r, 1500));
  const busy = await sample(pid);
  const shimMemory = shims().map((p) => {
    try {
      return memory(p);
    } catch {
      return { rss: 0, pss: 0 };
    }
  });
  const shimCount = shimMemory.length;
  const shimRss = shimMemory.reduce((sum, m) => sum + m.rss, 0);
  const shimPss = shimMemory.reduce((sum, m) => sum + m.pss, 0);
  sh(`${qwex(`cancel --grace 0 ${ids.join(' ')}`)} >/dev/null 2>&1 || true`);
  daemon(false);
  sections.push({
    name: 'qwexd resource use',
    unit: 'as noted',
    rows: [
      { variant: `idle, ${(1000 + N.sampleMs) / 1000} s after start: RSS (MB)`, value: idle.rss / 1e6 },
      { variant: `idle, ${(1000 + N.sampleMs) / 1000} s after start: PSS (MB)`, value: idleMemory.pss / 1e6 },
      { variant: 'idle, settled (RSS no longer falling): RSS (MB)', value: settled.rss / 1e6 },
      { variant: 'idle, settled: PSS (MB)', value: settled.pss / 1e6 },
      { variant: 'idle: CPU (% of one core)', value: idle.cpu },
      { variant: `${N.active} runs active: RSS (MB)`, value: busy.rss / 1e6 },
      { variant: `${N.active} runs active: CPU (% of one core)`, value: busy.cpu },
      { variant: `${N.active} runs active: their shims (${shimCount} found): RSS together (MB)`, value: shimRss / 1e6 },
      { variant: `${N.active} runs active: their shims: PSS together (MB)`, value: shimPss / 1e6 },
      { variant: 'one shim: PSS (kB)', value: shimCount ? shimPss / shimCount / 1e3 : NaN },
    ],
  });
  goal('idle qwexd RSS (settled)', '< 60 MB', `${(settled.rss / 1e6).toFixed(1)} MB (${(idle.rss / 1e6).toFixed(1)} MB ${(1000 + N.sampleMs) / 1000} s after start)`, settled.rss / 1e6 < 60);
  goal('idle qwexd CPU', '< 0.5%', `${idle.cpu.toFixed(2)}%`, idle.cpu < 0.5);
  goal(`qwexd CPU with ${N.active} runs active`, '< 5% of a core', `${busy.cpu.toFixed(1)}%`, busy.cpu < 5);
}

// 6. workspace snapshots
if (want('snapshot')) {
  const files = smoke ? 100 : 10_000;
  const tree = join(base, 'tree');
  for (let d = 0; d < files / 100; d++) {
    mkdirSync(join(tree, `d${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) writeFileSync(join(tree, `d${d}`, `f${f}.bin`), Buffer.alloc(10_000, d * 100 + f));
  }
  const { ContentStore, snapshotWorkspace } = await import(join(ROOT, 'dist', 'src', 'workspace', 'snapshot.js'));
  const store = new ContentStore(join(base, 'store'));
  const times = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await snapshotWorkspace(tree, store);
    times.push(performance.now() - t);
  }
  sections.push({
    name: `Workspace snapshot of ${files.toLocaleString('en')} files (${(files * 10_000) / 1e6} MB)`,
    unit: 'ms',
    rows: [
      { variant: 'first snapshot (hash and store every file)', value: times[0] },
      { variant: 'second snapshot, tree unchanged (median of 2)', value: median(times.slice(1)) },
    ],
  });
  goal(`second snapshot of an unchanged ${files.toLocaleString('en')}-file tree`, '< 1 s', fmt(median(times.slice(1))), median(times.slice(1)) < 1000);
}

// 7. Docker: one foreground container run of `true`, qwex against `docker run --rm` on the same engine and image
if (want('docker')) {
  const image = 'qwex-test/busybox:latest';
  const name = 'Docker: `qwex run --backend docker -- true` vs `docker run --rm IMAGE true`';
  if (!have('docker') || spawnSync('docker', ['image', 'inspect', image]).status !== 0) {
    sections.push({ name, unit: '', rows: [], note: `skipped: no Docker engine with ${image} (run scripts/provision-docker.sh as root).` });
  } else {
    daemon(false);
    const run = () => timed(() => sh(`${qwex(`run -q --backend docker --image ${image} --pull never -- true`)}`));
    const direct = 'qwex run --backend docker (foreground, direct mode: a monitor process)';
    const viaDaemon = 'qwex run --backend docker (foreground, through qwexd)';
    const res = interleave(
      {
        'docker run --rm': () => timed(() => sh(`docker run --rm ${image} true`)),
        [direct]: () => {
          daemon(false);
          return run();
        },
        [viaDaemon]: () => {
          daemon(true, 4);
          const ms = run();
          daemon(false);
          return ms;
        },
      },
      smoke ? 1 : 7,
    );
    const peer = res['docker run --rm'].median;
    sections.push({ name, unit: 'ms (median wall time)', rows: Object.entries(res).map(([k, v]) => ({ variant: k, value: v.median, ratio: v.median / peer, peer: 'docker run --rm' })) });
    const r = (k) => res[k].median / peer;
    goal('qwex run --backend docker vs docker run --rm', '≤ 1.3×', `${r(direct).toFixed(2)}× direct, ${r(viaDaemon).toFixed(2)}× through qwexd`, Math.min(r(direct), r(viaDaemon)) <= 1.3);
  }
}

// 8. qwexcloud: submissions under load against a bare Fastify route, and its memory (bench/cloud.mjs)
if (want('cloud')) {
  const { cloudBench } = await import('./cloud.mjs');
  const result = await cloudBench({ root: ROOT, base, smoke });
  sections.push(...result.sections);
  goals.push(...result.goals);
}

// Report
const meta = {
  date: new Date().toISOString(),
  host: hostname(),
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? 'unknown',
  memoryGb: Math.round(totalmem() / 1e9),
  node: process.version,
  kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(),
  // The 1, 5 and 15 minute load averages when it started and ended: how much else the machine was doing.
  loadAverage: { start: loadAtStart.map((x) => Number(x.toFixed(2))), end: loadavg().map((x) => Number(x.toFixed(2))) },
  smoke,
  peers: Object.fromEntries(Object.entries(peers).map(([k, v]) => [k, v ? sh(`command -v ${k}`).trim() : null])),
};
const md = [
  `# qwex benchmark${smoke ? ' (smoke)' : ''}`,
  '',
  `${meta.date} · ${meta.cpus} CPUs (${meta.cpuModel}) · ${meta.memoryGb} GB · Node ${meta.node} · Linux ${meta.kernel} · load average ${meta.loadAverage.start[0]} at the start, ${meta.loadAverage.end[0]} at the end`,
  '',
  '## Goals',
  '',
  '| measure | goal | result | met |',
  '|---|---|---|---|',
  ...goals.map((g) => `| ${g.measure} | ${g.goal} | ${g.value} | ${g.met ? 'yes' : '**no**'} |`),
  '',
];
for (const s of sections) {
  md.push(`## ${s.name}`, '');
  if (s.note) md.push(s.note, '');
  if (s.rows.length === 0) continue;
  const withCpu = s.cpuUnit !== undefined;
  md.push(
    `Unit: ${s.unit}${withCpu ? `; ${s.cpuUnit}: user + system time of every process of the variant (its server's included), so that it stays comparable on a busy machine` : ''}`,
    '',
    `| variant | value | ratio | to |${withCpu ? ` ${s.cpuUnit} | CPU ratio |` : ''}`,
    `|---|---|---|---|${withCpu ? '---|---|' : ''}`,
  );
  const ratio = (x) => (x === undefined || Number.isNaN(x) ? '' : `${x.toFixed(2)}×`);
  for (const r of s.rows) {
    const value = s.unit.startsWith('ms') ? fmt(r.value) : `${Number(r.value).toFixed(r.value < 10 ? 2 : 1)}${r.unitNote ? ` ${r.unitNote}` : ''}`;
    const cpu = withCpu ? ` ${r.cpu === undefined || Number.isNaN(r.cpu) ? 'n/a' : r.cpu.toFixed(r.cpu < 10 ? 2 : 1)} | ${ratio(r.cpuRatio)} |` : '';
    md.push(`| ${r.variant} | ${value} | ${ratio(r.ratio)} | ${r.peer ?? ''} |${cpu}`);
  }
  md.push('');
}
const text = md.join('\n');
console.log(text);
mkdirSync(outDir, { recursive: true });
const stem = `${meta.date.slice(0, 10)}-${meta.host}${smoke ? '-smoke' : ''}`;
writeFileSync(join(outDir, `${stem}.md`), `${text}\n`);
writeFileSync(join(outDir, `${stem}.json`), `${JSON.stringify({ meta, goals, sections }, null, 2)}\n`);
console.error(`bench: wrote ${join(outDir, `${stem}.md`)} and .json`);
rmSync(base, { recursive: true, force: true });
