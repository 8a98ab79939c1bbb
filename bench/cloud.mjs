// qwexcloud under load, for `npm run bench` (`--only cloud`): submissions per
// second and submit latency with many concurrent clients while hundreds of
// idle log followers are connected, against a bare Fastify route that only
// writes a row (the peer, measured in the same run, A B A B), and the
// server's memory with a long history and those followers.
//
// The server runs as it ships (dist/server/qwexcloud.js, SQLite, the local
// target) with one run slot, held by a long run whose log the followers
// follow: the runs submitted meanwhile queue, so what is measured is the
// API's side of a submit (validation, the record, the run directory, the
// SQL row), not the execution of thousands of `true`s on the same two cores.
//
// Run alone as `node bench/cloud.mjs --bare PORT DB` it is the peer server.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';

const SIZES = {
  smoke: { clients: 10, followers: 20, history: 200, submits: 100, reps: 1 },
  full: { clients: 100, followers: 500, history: 10_000, submits: 3000, reps: 2 },
};

if (process.argv[2] === '--bare') await bareServer(Number(process.argv[3]), process.argv[4]);

/** The peer: Fastify with one route that writes one row into SQLite (WAL, as qwexcloud opens it) and answers. */
async function bareServer(port, dbPath) {
  const { default: Fastify } = await import('fastify');
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(dbPath);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('create table if not exists runs (id text primary key, body text not null, created_at text not null)');
  const insert = db.prepare('insert into runs (id, body, created_at) values (?, ?, ?)');
  const { randomUUID } = await import('node:crypto');
  const app = Fastify({ logger: false });
  app.post('/v1/runs', async (req, reply) => {
    const id = randomUUID();
    insert.run(id, JSON.stringify(req.body), new Date().toISOString());
    return reply.status(201).send({ id });
  });
  await app.listen({ host: '127.0.0.1', port });
  process.stdout.write('ready\n');
}

/**
 * Measures and returns { sections, goals } in bench.mjs's shapes.
 * `root`: the repository; `base`: a scratch directory; `smoke`: tiny counts.
 */
export async function cloudBench({ root, base, smoke }) {
  const n = smoke ? SIZES.smoke : SIZES.full;
  const dir = join(base, 'cloud');
  const data = join(dir, 'data');
  mkdirSync(dir, { recursive: true });
  const qwexcloud = join(root, 'dist', 'server', 'qwexcloud.js');
  const config = join(dir, 'qwexcloud.yaml');
  // The limits a busy team's server would be given: the defaults would rate-limit one token's 100 clients.
  writeFileSync(config, 'limits:\n  rate_max: 100000000\n  rate_window_seconds: 1\n');
  const token = execFileSync(process.execPath, [qwexcloud, 'token', 'create', '--user', 'bench', '--data', data], { encoding: 'utf8' }).trim();
  await seedHistory(root, join(data, 'qwexcloud.db'), n.history);

  const children = [];
  // Output goes to a file, as a service's goes to its journal: reading it is no load on the clients' process.
  const start = async (name, args, ready) => {
    const log = join(dir, `${name}.log`);
    const fd = openSync(log, 'w');
    const child = spawn(process.execPath, args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    children.push(child);
    let exited;
    child.on('exit', (code) => (exited = code));
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(50)) {
      const url = ready(readFileSync(log, 'utf8'));
      if (url) return { child, url };
      if (exited !== undefined) break;
    }
    throw new Error(`bench: ${name} did not start (exit ${exited}): ${readFileSync(log, 'utf8').slice(-2000)}`);
  };
  try {
    // Logging at its default level (info: a line per request), as it ships.
    const cloud = await start('qwexcloud', [qwexcloud, 'serve', '--listen', '127.0.0.1:0', '--data', data, '--config', config, '--target', 'local', '--concurrency', '1'], (out) => /"event":"ready","url":"(http[^"]+)"/.exec(out)?.[1]);
    const barePort = await freePort();
    const bare = await start('bare', [new URL(import.meta.url).pathname, '--bare', String(barePort), join(dir, 'bare.db')], (out) => (out.includes('ready') ? `http://127.0.0.1:${barePort}` : undefined));
    const auth = { authorization: `Bearer ${token}` };

    // The run that holds the server's one slot; the followers follow its (silent) log.
    const holder = await call(cloud.url, 'POST', '/v1/runs', { job: { command: ['sleep', '3600'], name: 'held' } }, auth);
    const followers = await connectFollowers(cloud.url, `/v1/runs/${holder.body.id}/logs?stream=stdout&follow=1`, auth, n.followers);
    await sleep(1000);
    const rssHistory = rss(cloud.child.pid);

    const body = { job: { command: ['true'] } };
    const results = { bare: [], cloud: [] };
    for (let rep = 0; rep < n.reps; rep++) {
      results.bare.push(await hammer(bare.url, {}, body, n.clients, n.submits));
      results.cloud.push(await hammer(cloud.url, auth, body, n.clients, n.submits));
    }
    const rssAfter = rss(cloud.child.pid);
    const open = followers.filter((f) => f.open).length;
    for (const f of followers) f.close();

    const pick = (runs) => ({
      rate: median(runs.map((r) => r.rate)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      first: runs[0].first,
      last: runs.at(-1).last,
      errors: runs.reduce((s, r) => s + r.errors, 0),
    });
    const b = pick(results.bare);
    const c = pick(results.cloud);
    const ratio = c.rate / b.rate;
    const sections = [
      {
        name: `qwexcloud submissions: ${n.clients} concurrent clients, ${n.followers} idle log followers connected (${open} still open at the end)`,
        unit: 'as noted',
        rows: [
          { variant: 'bare Fastify route writing one SQLite row: submits per second', value: b.rate, unitNote: '/s' },
          { variant: 'qwexcloud POST /v1/runs: submits per second', value: c.rate, unitNote: '/s', ratio, peer: 'bare Fastify route' },
          { variant: 'bare route: latency p50 (ms)', value: b.p50, unitNote: 'ms' },
          { variant: 'bare route: latency p99 (ms)', value: b.p99, unitNote: 'ms' },
          { variant: 'qwexcloud: submit latency p50 (ms)', value: c.p50, unitNote: 'ms' },
          { variant: 'qwexcloud: submit latency p99 (ms)', value: c.p99, unitNote: 'ms' },
          { variant: 'qwexcloud: latency p50 of the first tenth of submits (short queue) (ms)', value: c.first, unitNote: 'ms' },
          { variant: `qwexcloud: latency p50 of the last tenth (${(n.submits * n.reps).toLocaleString('en')} queued by then) (ms)`, value: c.last, unitNote: 'ms' },
          { variant: 'failed requests (both)', value: b.errors + c.errors },
        ],
      },
      {
        name: 'qwexcloud memory',
        unit: 'as noted',
        rows: [
          { variant: `RSS with ${n.history.toLocaleString('en')} runs in history and ${n.followers} followers (MB)`, value: rssHistory / 1e6, unitNote: 'MB' },
          { variant: `RSS after ${(n.submits * n.reps).toLocaleString('en')} more submits, queued (MB)`, value: rssAfter / 1e6, unitNote: 'MB' },
        ],
      },
    ];
    const goals = [
      { measure: `qwexcloud submit throughput vs a bare Fastify row insert (${n.clients} clients, ${n.followers} followers)`, goal: '≥ 0.5×', value: `${ratio.toFixed(2)}×`, met: ratio >= 0.5 },
      { measure: 'qwexcloud submit latency, 99th percentile', goal: '< 50 ms', value: `${c.p99.toFixed(1)} ms`, met: c.p99 < 50 },
    ];
    return { sections, goals };
  } finally {
    for (const child of children) child.kill('SIGTERM');
  }
}

/** `count` runs in the server's history before it starts: ended runs' rows, as SQL keeps them after their run directories are gone. */
async function seedHistory(root, dbPath, count) {
  const { openDatabase } = await import(join(root, 'dist', 'server', 'db', 'connect.js'));
  const { migrateToLatest } = await import(join(root, 'dist', 'server', 'db', 'migrate.js'));
  const { newRunId } = await import(join(root, 'dist', 'src', 'new-run-id.js'));
  const database = await openDatabase(`sqlite:${dbPath}`);
  try {
    await migrateToLatest(database);
    const now = new Date().toISOString();
    for (let i = 0; i < count; i += 500) {
      const rows = [];
      for (let j = i; j < Math.min(count, i + 500); j++) {
        const id = newRunId();
        const record = { version: 1, id, project: '/history', job: { command: ['python', 'train.py', `--seed=${j}`], shell: false, cwd: '/history', env: {}, backend: 'local', backendOptions: {}, artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 100 }, killGraceMs: 10_000 }, status: 'succeeded', createdAt: now, startedAt: now, finishedAt: now, exitCode: 0, signal: null, endReason: 'exit', backend: { name: 'local' }, metadata: { host: 'bench', user: 'bench', qwexVersion: '0' } };
        rows.push({ id, user_name: 'bench', target: 'local', backend: 'local', cluster: null, queue: null, name: null, command: record.job.command.join(' '), status: 'succeeded', exit_code: 0, signal: null, end_reason: 'exit', created_at: now, started_at: now, finished_at: now, updated_at: now, run_dir: `/history/.qwex/runs/${id}`, record: JSON.stringify(record), artifacts_collected: 1, artifacts_manifest: null });
      }
      await database.db.insertInto('runs').values(rows).execute();
    }
  } finally {
    await database.close();
  }
}

/** `clients` loops, each submitting one request after another, `total` in all; rate and latency percentiles. */
async function hammer(url, headers, body, clients, total) {
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  const latencies = [];
  let sent = 0;
  let errors = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (sent < total) {
        sent++;
        const t = performance.now();
        const r = await call(url, 'POST', '/v1/runs', body, headers, agent).catch(() => ({ status: 0 }));
        latencies.push(performance.now() - t);
        if (r.status !== 201) errors++;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  // In the order they completed: the first and last tenth show whether a submit costs more as the history and queue grow.
  const tenth = Math.max(1, Math.floor(latencies.length / 10));
  return { rate: total / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99), first: percentile(latencies.slice(0, tenth), 50), last: percentile(latencies.slice(-tenth), 50), errors };
}

function call(url, method, path, body, headers = {}, agent = undefined) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(new URL(path, url), { method, agent, headers: { ...headers, ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}) } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let parsed;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = text;
        }
        resolve({ status: res.statusCode, body: parsed });
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

/** `count` open event streams (one connection each), as `qwex logs -f` or a supervisor holds them. */
async function connectFollowers(url, path, headers, count) {
  const followers = [];
  for (let i = 0; i < count; i++) {
    followers.push(
      await new Promise((resolve, reject) => {
        const req = request(new URL(path, url), { headers: { ...headers, accept: 'text/event-stream' }, agent: false }, (res) => {
          if (res.statusCode !== 200) return reject(new Error(`bench: a follower got HTTP ${res.statusCode}`));
          const f = { open: true, close: () => req.destroy() };
          res.on('data', () => {});
          res.on('close', () => (f.open = false));
          resolve(f);
        });
        req.on('error', reject);
        req.end();
      }),
    );
  }
  return followers;
}

function rss(pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function freePort() {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}
