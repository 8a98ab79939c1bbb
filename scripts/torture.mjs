#!/usr/bin/env node
// The crash campaign, bounded: N short runs submitted to qwexd in batches
// while qwexd is killed with SIGKILL K times at random instants (one of them
// during a batch submit) and restarted, its shims' spawner S times (qwexd
// starts another), and, optionally (root), while a run
// fills the project's disk for a moment. Then it checks what must hold:
// every job ran exactly once, every run has its exact exit code and its
// complete log, and none is `lost`.
//
//   npm run torture -- --runs 100 --kills 5 [--spawner-kills 3] [--concurrency 8] [--disk-full] [--seed N] [--keep]
//
// Prints the counts and exits 0 when everything held, 1 otherwise. Used by
// test/torture.test.ts with small numbers.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const CLI = join(ROOT, 'dist', 'client', 'cli.js');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(args[at + 1]);
};
const RUNS = option('runs', 100);
const KILLS = option('kills', 5);
const SPAWNER_KILLS = option('spawner-kills', 0);
const CONCURRENCY = option('concurrency', 8);
const BATCHES = Math.max(1, Math.min(5, Math.ceil(RUNS / 20)));
const diskFull = args.includes('--disk-full');
const keep = args.includes('--keep');
const SEED = option('seed', Date.now() % 100000);
let seed = SEED;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);

if (!existsSync(CLI)) {
  console.error('torture: dist/ is missing; run `npm run build` first');
  process.exit(2);
}

const base = realpathSync(mkdtempSync(join(tmpdir(), 'qwex-torture-')));
const project = join(base, 'project');
const env = { ...process.env, QWEX_STATE_DIR: join(base, 'state'), QWEX_RUNTIME_DIR: join(base, 'run'), NO_COLOR: '1', QWEX_FATAL_ERRORS: '1' };
delete env.QWEX_NO_DAEMON;
mkdirSync(project, { recursive: true });
let mounted = false;
if (diskFull) {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', project]);
  if (r.status !== 0) {
    console.error(`torture: --disk-full needs a tmpfs (root): ${String(r.stderr).trim()}`);
    process.exit(2);
  }
  mounted = true;
}
const ledger = join(base, 'ledger');
const fillWindow = join(base, 'fill-window');

function qwex(argv, input) {
  return spawnSync(process.execPath, [CLI, ...argv], { cwd: project, env, input, encoding: 'utf8', timeout: 120_000 });
}
function daemonPid() {
  try {
    return Number(readFileSync(join(base, 'run', 'qwexd.pid'), 'utf8'));
  } catch {
    return 0;
  }
}
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Job i: records that it started, prints two known lines with a pause between, exits i % 7. */
function jobLine(i) {
  const pause = `0.${(i * 37) % 6}`;
  return `echo ${i} >> ${ledger}; echo "line-a ${i}"; sleep ${pause}; echo "line-b ${i}"; exit ${i % 7}`;
}

const started = Date.now();
const kills = [];
const spawnerKills = [];
let exitCode;
try {
  if (qwex(['daemon', 'start', '--concurrency', String(CONCURRENCY)]).status !== 0) throw new Error('qwexd did not start');

  // The killer: K kills at random instants over the submissions and the runs; qwexd is restarted after each.
  let killing = true;
  const killer = (async () => {
    for (let k = 0; k < KILLS && killing; k++) {
      await sleep(150 + random() * 900);
      const pid = daemonPid();
      if (pid > 0 && alive(pid)) {
        process.kill(pid, 'SIGKILL');
        kills.push(Date.now() - started);
      }
      await sleep(50 + random() * 300);
      qwex(['daemon', 'start', '--concurrency', String(CONCURRENCY)]);
    }
  })();

  // The spawner's killer: qwexd's shims are forked by libexec/qwex-spawner; a start it had not answered is sent again.
  const spawnerKiller = (async () => {
    for (let k = 0; k < SPAWNER_KILLS && killing; k++) {
      await sleep(100 + random() * 700);
      const pid = daemonPid();
      if (!(pid > 0 && alive(pid))) continue;
      const found = spawnSync('pgrep', ['-P', String(pid), '-f', 'qwex-spawner'], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
      for (const spawner of found) {
        try {
          process.kill(Number(spawner), 'SIGKILL');
          spawnerKills.push(Date.now() - started);
        } catch {
          // gone meanwhile
        }
      }
    }
  })();

  // Submissions, in batches, concurrently with the killer; one kill is aimed at a batch in flight.
  const ids = [];
  const per = Math.ceil(RUNS / BATCHES);
  for (let b = 0; b < BATCHES; b++) {
    const lines = [];
    for (let i = b * per; i < Math.min(RUNS, (b + 1) * per); i++) lines.push(jobLine(i));
    // The disk filler notes when the disk was full: output a command wrote then may be lost by the OS (its write
    // failed), which qwex cannot help; exit codes and records must still be exact.
    // Each run of it appends its window: a filler run twice (it must not be) is seen, and every window is known.
    if (diskFull && b === Math.floor(BATCHES / 2)) lines.push(`echo "from $(date +%s%3N)" >> ${fillWindow}; dd if=/dev/zero of=${join(project, 'fill')} bs=64k 2>/dev/null; sleep 1; rm -f ${join(project, 'fill')}; echo "to $(date +%s%3N)" >> ${fillWindow}; exit 0`);
    // A full disk refuses a whole batch with exit 6 and keeps nothing of it: it is sent again once there is room.
    for (let attempt = 1; ; attempt++) {
      const child = spawn(process.execPath, [CLI, 'submit', '-', '--in-place'], { cwd: project, env, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (c) => (out += c));
      child.stderr.on('data', (c) => (err += c));
      child.stdin.end(`${lines.join('\n')}\n`);
      if (b === 1 && attempt === 1) {
        await sleep(40 + random() * 80);
        const pid = daemonPid();
        if (pid > 0 && alive(pid)) {
          process.kill(pid, 'SIGKILL');
          kills.push(Date.now() - started);
        }
      }
      const code = await new Promise((r) => child.on('close', r));
      if (code === 0) {
        ids.push(...out.trim().split('\n').filter(Boolean));
        break;
      }
      if (code !== 6 || attempt >= 20) throw new Error(`batch ${b} submit exited ${code}: ${err.trim()}`);
      await sleep(500);
    }
  }
  // The kills go on while the runs run; then qwexd is left up to finish them.
  await Promise.all([killer, spawnerKiller]);
  killing = false;
  if (!alive(daemonPid())) qwex(['daemon', 'start', '--concurrency', String(CONCURRENCY)]);

  const waited = qwex(['wait', '--json', ...ids]);
  let runs;
  try {
    runs = JSON.parse(waited.stdout);
  } catch {
    throw new Error(`qwex wait did not print the records (exit ${waited.status}): ${String(waited.stderr).trim().slice(0, 500)}`);
  }
  const byIndex = new Map();
  const problems = [];
  // When the disk was full: [from, to] of each run of the filler (to: now, for one that never ended).
  const fillLines = existsSync(fillWindow) ? readFileSync(fillWindow, 'utf8').trim().split('\n').filter(Boolean) : [];
  const windows = fillLines.filter((l) => l.startsWith('from ')).map((l, k) => [Number(l.slice(5)), Number(fillLines.filter((t) => t.startsWith('to '))[k]?.slice(3) ?? Date.now())]);
  if (windows.length > 1) problems.push(`the disk filler ran ${windows.length} times: ${JSON.stringify(windows)}`);
  let logsDuringFullDisk = 0;
  let exact = 0;
  let lost = 0;
  for (const run of runs) {
    const command = run.job.command[0] ?? '';
    const match = /^echo (\d+) >>/.exec(command);
    if (!match) continue; // the disk filler
    const i = Number(match[1]);
    if (byIndex.has(i)) problems.push(`job ${i} has two runs: ${byIndex.get(i)} and ${run.id}`);
    byIndex.set(i, run.id);
    if (run.status === 'lost') lost++;
    const dir = join(project, '.qwex', 'runs', run.id);
    const log = existsSync(join(dir, 'stdout.log')) ? readFileSync(join(dir, 'stdout.log'), 'utf8') : '';
    const wantStatus = i % 7 === 0 ? 'succeeded' : 'failed';
    const ranWhileFull = windows.some(([from, to]) => Date.parse(run.startedAt ?? run.createdAt) <= to + 1000 && Date.parse(run.finishedAt) >= from - 1000);
    const logOk = log === `line-a ${i}\nline-b ${i}\n` || (ranWhileFull && (logsDuringFullDisk += 1) > 0);
    if (run.status === wantStatus && run.exitCode === i % 7 && logOk) exact++;
    else problems.push(`job ${i} (run ${run.id}): ${run.status} exit ${run.exitCode}, log ${JSON.stringify(log)}${run.error ? `, ${run.error.message}` : ''} (ran ${run.startedAt} to ${run.finishedAt}; disk full ${JSON.stringify(windows.map((w) => w.map((t) => new Date(t).toISOString())))})`);
  }
  const starts = existsSync(ledger) ? readFileSync(ledger, 'utf8').trim().split('\n').filter(Boolean).map(Number) : [];
  const counts = new Map();
  for (const i of starts) counts.set(i, (counts.get(i) ?? 0) + 1);
  const twice = [...counts].filter(([, n]) => n > 1).map(([i]) => i);
  const missing = [];
  for (let i = 0; i < RUNS; i++) if (!byIndex.has(i)) missing.push(i);
  for (const i of twice) problems.push(`job ${i} started ${counts.get(i)} times`);
  if (missing.length) problems.push(`jobs without a run: ${missing.join(', ')}`);
  const dirs = readdirSync(join(project, '.qwex', 'runs')).length;
  const result = { runs: RUNS, submitted: ids.length, runDirectories: dirs, exact, logsDuringFullDisk, lost, startedTwice: twice.length, missing: missing.length, kills: kills.length, spawnerKills: spawnerKills.length, seed: SEED, seconds: Math.round((Date.now() - started) / 100) / 10 };
  console.log(JSON.stringify(result));
  for (const p of problems.slice(0, 20)) console.error(`torture: ${p}`);
  exitCode = problems.length === 0 && exact === RUNS && lost === 0 ? 0 : 1;
} catch (error) {
  console.error(`torture: ${error.message}`);
  exitCode = 1;
} finally {
  const pid = daemonPid();
  if (pid > 0 && alive(pid)) process.kill(pid, 'SIGTERM');
  await sleep(300);
  if (mounted && !(keep && exitCode !== 0)) execFileSync('umount', ['-l', project]);
  if (keep) console.error(`torture: kept ${base}`);
  else rmSync(base, { recursive: true, force: true });
}
process.exit(exitCode);
