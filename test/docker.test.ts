/**
 * What only the Docker backend does, against a real engine: the user a
 * container runs as, resources, mounts, configuration, orphans, and every
 * error a user can meet. Skipped with a printed reason where no engine can
 * be had; QWEX_REQUIRE_DOCKER=1 (CI) makes that a failure.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DockerBackend } from '../src/backends/docker/backend.js';
import { containerSpec } from '../src/backends/docker/container.js';
import { connect } from '../src/backends/docker/engine.js';
import { ContainerLogCopy } from '../src/backends/docker/logs.js';
import type { RunIO } from '../src/backends/types.js';
import type { Job, Run } from '../src/run/model.js';
import { DOCKER_TEST_IMAGE, dockerUnavailable, qwex, requireComponent, sandbox, until, type Sandbox } from './helpers.js';
import { AS_NOBODY, checkoutForNobody, skipUnlessCi } from './unprivileged.js';

const DOCKER = ['--backend', 'docker', '--image', DOCKER_TEST_IMAGE, '--pull', 'never'];

let reason: string | undefined;
let sb: Sandbox;
beforeAll(async () => {
  reason = await dockerUnavailable();
});
beforeEach((ctx) => {
  requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', reason);
  sb = sandbox();
});
afterEach(async () => {
  if (sb) await sb.cleanup();
});

function runs(): Run[] {
  const dir = join(sb.project, '.qwex', 'runs');
  let ids: string[];
  try {
    ids = readdirSync(dir).sort();
  } catch {
    return [];
  }
  return ids.map((id) => JSON.parse(readFileSync(join(dir, id, 'run.json'), 'utf8')) as Run);
}

function onlyRun(): Run {
  const all = runs();
  expect(all).toHaveLength(1);
  return all[0]!;
}

describe('docker backend: the container', () => {
  it('runs as the invoking user by default, so files it writes are the user\'s; --user overrides', async () => {
    const mine = await qwex(sb, ['run', '-q', ...DOCKER, '--', 'sh', '-c', 'id -u; id -g; mkdir -p out; echo x > out/f']);
    expect(mine.exitCode, String(mine.stderr)).toBe(0);
    expect(String(mine.stdout).split('\n')).toEqual([String(process.getuid!()), String(process.getgid!())]);
    expect(statSync(join(sb.project, 'out', 'f')).uid).toBe(process.getuid!());
    const other = await qwex(sb, ['run', '-q', ...DOCKER, '--user', '4321:4321', '--', 'sh', '-c', 'id -u; id -g']);
    expect(String(other.stdout).split('\n')).toEqual(['4321', '4321']);
    expect(runs()[1]!.job.container).toMatchObject({ user: '4321:4321', image: DOCKER_TEST_IMAGE, pull: 'never' });
  });

  it('applies memory and CPU limits, recorded in portable form', async () => {
    const r = await qwex(sb, ['run', '-q', ...DOCKER, '--memory', '64m', '--cpus', '0.5', '--', 'sh', '-c',
      'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const [memory, cpu] = String(r.stdout).split('\n');
    expect(memory).toBe(String(64 * 1024 * 1024));
    const [quota, period] = cpu!.split(' ').map(Number);
    expect(quota! / period!).toBeCloseTo(0.5);
    expect(onlyRun().job.container?.resources).toEqual({ memoryBytes: 64 * 1024 * 1024, cpus: 0.5 });
  });

  it('bind-mounts extra paths, read-only when asked', async () => {
    const data = join(sb.project, '..', 'data');
    mkdirSync(data);
    writeFileSync(join(data, 'input.txt'), 'dataset\n');
    const r = await qwex(sb, ['run', '-q', ...DOCKER, '--mount', `${data}:/data:ro`, '--', 'sh', '-c', 'cat /data/input.txt; echo no > /data/new 2>/dev/null && echo wrote || echo refused']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('dataset\nrefused');
  });

  it('takes image, resources and environment from qwex.yaml, flags winning', async () => {
    writeFileSync(join(sb.project, 'qwex.yaml'), `backend: docker\nbackends:\n  docker:\n    image: ${DOCKER_TEST_IMAGE}\n    pull: never\n    memory: 32m\n    env:\n      FROM_CONFIG: yes\n`);
    const r = await qwex(sb, ['run', '-q', '--memory', '48m', '--', 'sh', '-c', 'echo $FROM_CONFIG; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe(`yes\n${48 * 1024 * 1024}`);
    expect(onlyRun().backend.name).toBe('docker');
  });

  it('records a container killed for memory as failed, saying so', async () => {
    const r = await qwex(sb, ['run', ...DOCKER, '--memory', '16m', '--', 'sh', '-c', 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo ${#x}']);
    expect(r.exitCode).not.toBe(0);
    const run = onlyRun();
    expect(run.status).toBe('failed');
    expect(run.error?.code).toBe('QWEX_OUT_OF_MEMORY');
    expect(String(r.stderr)).toMatch(/out of memory/);
  });

  it('a SIGKILL under a memory limit is said as likely out of memory (the engine misses some OOM kills); a cancel that had to SIGKILL is not', async () => {
    const r = await qwex(sb, ['run', ...DOCKER, '--memory', '64m', '--', 'sh', '-c', 'kill -9 $$']);
    expect(r.exitCode).toBe(137);
    expect(onlyRun().error).toMatchObject({ code: 'QWEX_OUT_OF_MEMORY', message: expect.stringMatching(/SIGKILL, exit 137\) under its memory limit of 64 MiB: most likely it ran out of memory/) });
    rmSync(join(sb.project, '.qwex', 'runs'), { recursive: true, force: true });
    const id = String((await qwex(sb, ['run', '-d', ...DOCKER, '--memory', '64m', '--grace', '1s', '--', 'sh', '-c', 'trap "" TERM; echo started; while :; do sleep 0.1; done'])).stdout).trim();
    await until(() => (readFileSync(join(sb.project, '.qwex', 'runs', id, 'stdout.log'), 'utf8').includes('started') ? true : undefined), 30_000, 'the container to start');
    expect((await qwex(sb, ['cancel', '--grace', '1s', id])).exitCode).toBe(0);
    const cancelled = await until(() => (onlyRun().status === 'cancelled' ? onlyRun() : undefined), 30_000, 'the run to be recorded cancelled');
    expect(cancelled.error).toBeUndefined();
  });
});

describe('docker backend: errors', () => {
  it('an image missing with pull policy never fails the run, naming the image and what to do', async () => {
    const r = await qwex(sb, ['run', '--backend', 'docker', '--image', 'qwex-test/absent:1', '--pull', 'never', '--', 'true']);
    expect(r.exitCode).toBe(1);
    expect(onlyRun()).toMatchObject({ status: 'failed', endReason: 'error', error: { code: 'QWEX_IMAGE_NOT_FOUND' } });
    expect(String(r.stderr)).toContain('the image qwex-test/absent:1 is not on the Docker engine and the pull policy is "never"');
  });

  it('a pull that fails (no registry can be reached here) is recorded with the engine\'s reason', async () => {
    const r = await qwex(sb, ['run', '--backend', 'docker', '--image', '127.0.0.1:9/qwex-test/absent:1', '--pull', 'missing', '--', 'true']);
    expect(r.exitCode).toBe(1);
    const run = onlyRun();
    expect(run.error?.code).toBe('QWEX_IMAGE_PULL_FAILED');
    expect(run.error?.message).toMatch(/^cannot pull 127\.0\.0\.1:9\/qwex-test\/absent:1: .+/);
  }, 90_000);

  it('bad resource values and a missing image are usage errors before anything is recorded', async () => {
    for (const [flags, message] of [
      [['--memory', 'lots'], /memory: "lots" is not a memory size/],
      [['--memory', '1k'], /at least 6m/],
      [['--cpus', '-1'], /cpus: "-1" is not a number of CPUs/],
      [['--gpus', 'some'], /gpus: "some" is not a GPU request/],
      [['--mount', 'nocolon'], /mount: "nocolon" is not SRC:DST/],
      [['--mount', './x:/workspace'], /where qwex mounts the project/],
    ] as const) {
      const r = await qwex(sb, ['run', ...DOCKER, ...flags, '--', 'true']);
      expect(r.exitCode, flags.join(' ')).toBe(2);
      expect(String(r.stderr)).toMatch(message);
    }
    const noImage = await qwex(sb, ['run', '--backend', 'docker', '--', 'true']);
    expect(noImage.exitCode).toBe(2);
    expect(String(noImage.stderr)).toMatch(/no image given/);
    const notContainer = await qwex(sb, ['run', '--image', DOCKER_TEST_IMAGE, '--', 'true']);
    expect(notContainer.exitCode).toBe(2);
    expect(String(notContainer.stderr)).toMatch(/need a container backend/);
    expect(runs()).toEqual([]);
  });

  it('a bad value in qwex.yaml names the file and key (exit 5)', async () => {
    writeFileSync(join(sb.project, 'qwex.yaml'), 'backends:\n  docker:\n    memory: plenty\n');
    const r = await qwex(sb, ['run', ...DOCKER, '--', 'true']);
    expect(r.exitCode).toBe(5);
    expect(String(r.stderr)).toContain(`${join(sb.project, 'qwex.yaml')}: backends.docker: memory: "plenty"`);
  });

  it('no engine at DOCKER_HOST: the run fails saying where qwex looked', async () => {
    const host = `unix://${join(sb.project, 'no-docker.sock')}`;
    const r = await qwex(sb, ['run', ...DOCKER, '--', 'true'], { env: { DOCKER_HOST: host } });
    expect(r.exitCode).toBe(1);
    const run = onlyRun();
    expect(run.error).toMatchObject({ code: 'QWEX_BACKEND_UNAVAILABLE' });
    expect(run.error?.message).toContain(`no Docker engine answers at ${host}`);
  });

  it('a user without access to the engine\'s socket is told so (permission denied)', async (ctx) => {
    if (process.getuid!() !== 0) {
      console.log('skipped: needs root to run qwex as another user');
      return ctx.skip();
    }
    // nobody must reach the qwex it runs: from a private checkout (a 0700 home), a copy is staged where it can.
    const checkout = await checkoutForNobody();
    if ('reason' in checkout) return skipUnlessCi(ctx, checkout.reason);
    try {
      await execa('chmod', ['-R', 'a+rwX', join(sb.project, '..')]);
      const r = await execa('setpriv', [...AS_NOBODY, process.execPath, checkout.cli, 'run', ...DOCKER, '--', 'true'], {
        cwd: sb.project,
        env: { ...sb.env, HOME: sb.project, PATH: process.env.PATH ?? '/usr/bin:/bin', DOCKER_HOST: 'unix:///var/run/docker.sock', QWEX_RUNTIME_DIR: join(sb.project, '..', 'rt-nobody') },
        reject: false,
      });
      expect(r.exitCode, String(r.stderr)).toBe(1);
      expect(onlyRun().error?.message).toContain('permission denied on the Docker engine\'s socket (unix:///var/run/docker.sock)');
    } finally {
      checkout.cleanup();
    }
  });
});

/** What `qwex doctor --json` says of each backend's leftovers. */
interface DoctorJson {
  backends: { backend: string; reachable: boolean; orphans: { id: string; runId: string; reason: string; removed?: boolean }[] }[];
}

describe('docker backend: orphans', () => {
  it('qwex doctor lists qwex containers no run accounts for, and --remove-orphans removes them', async () => {
    const label = `qwex-test-orphan-${Date.now()}`;
    const created = await execa('docker', ['create', '--label', `qwex.run-id=${label}`, '--label', `qwex.run-dir=${join(sb.project, '.qwex', 'runs', label)}`, DOCKER_TEST_IMAGE, 'true']);
    const id = String(created.stdout).trim();
    try {
      const engine = (report: DoctorJson): DoctorJson['backends'][number] => report.backends.find((b) => b.backend === 'docker')!;
      const report = JSON.parse(String((await qwex(sb, ['doctor', '--json'])).stdout)) as DoctorJson;
      expect(engine(report).reachable).toBe(true);
      expect(engine(report).orphans).toContainEqual(expect.objectContaining({ id, reason: expect.stringMatching(/^no run record at /) }));
      const removed = JSON.parse(String((await qwex(sb, ['doctor', '--remove-orphans', '--json'])).stdout)) as DoctorJson;
      expect(engine(removed).orphans).toContainEqual(expect.objectContaining({ id, removed: true }));
      const left = await execa('docker', ['ps', '-aq', '--no-trunc', '--filter', `id=${id}`]);
      expect(String(left.stdout).trim()).toBe('');
    } finally {
      await execa('docker', ['rm', '-f', id], { reject: false });
    }
  });

  it('a run\'s container is not an orphan while it runs, and is removed once it is recorded', async () => {
    const id = String((await qwex(sb, ['run', '-d', ...DOCKER, '--', 'sleep', '3'])).stdout).trim();
    await until(() => (onlyRun().status === 'running' ? true : undefined), 20_000, 'the run to start');
    const report = JSON.parse(String((await qwex(sb, ['doctor', '--json'])).stdout)) as DoctorJson;
    expect(report.backends.find((b) => b.backend === 'docker')!.orphans.map((o) => o.runId)).not.toContain(id);
    expect((await qwex(sb, ['wait', id])).exitCode).toBe(0);
    await until(async () => (String((await execa('docker', ['ps', '-aq', '--filter', `name=qwex-${id}`])).stdout).trim() === '' ? true : undefined), 10_000, 'the container to be removed');
  });
});

describe('docker backend: the copy of a container\'s output (no engine needed)', () => {
  it('two copies at once (a look that found the end, and the supervisor that took over) write each byte once', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qwex-docker-copy-'));
    try {
      const frame = (type: number, text: string): Buffer => {
        const payload = Buffer.from(text);
        const header = Buffer.alloc(8);
        header[0] = type;
        header.writeUInt32BE(payload.length, 4);
        return Buffer.concat([header, payload]);
      };
      // The engine sends every copy the whole log from its first byte.
      const log = Buffer.concat([frame(1, 'out 1\n'), frame(2, 'err 1\n'), frame(1, 'out 2\n'), frame(2, 'err 2\n'), frame(1, 'out 3\n')]);
      const out = join(dir, 'stdout.log');
      const err = join(dir, 'stderr.log');
      const early = new ContainerLogCopy(out, err);
      early.push(log.subarray(0, 28)); // out 1, err 1
      early.close();
      const a = new ContainerLogCopy(out, err);
      const b = new ContainerLogCopy(out, err);
      a.push(log.subarray(0, 30));
      b.push(log.subarray(0, 50));
      a.push(log.subarray(30));
      b.push(log.subarray(50));
      a.close();
      b.close();
      expect(readFileSync(out, 'utf8')).toBe('out 1\nout 2\nout 3\n');
      expect(readFileSync(err, 'utf8')).toBe('err 1\nerr 2\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('docker backend: starting exactly once, and a cancel while it starts', () => {
  /** A run directory and the job of a run, as the runner would hand them to the backend. */
  const runOf = (command: string): { job: Job; io: RunIO } => {
    const runId = randomUUID();
    const dir = join(sb.project, '.qwex', 'runs', runId);
    mkdirSync(dir, { recursive: true });
    const job: Job = {
      command: ['sh', '-c', command],
      shell: false,
      cwd: sb.project,
      env: {},
      backend: 'docker',
      backendOptions: {},
      artifacts: { watch: ['out'], ignore: [], maxFileSizeMb: 100 },
      killGraceMs: 5000,
      container: { image: DOCKER_TEST_IMAGE, pull: 'never', mounts: [], env: {}, resources: {} },
    };
    const io: RunIO = { dir, runId, project: sb.project, root: sb.project, stdoutPath: join(dir, 'stdout.log'), stderrPath: join(dir, 'stderr.log'), env: {}, signal: new AbortController().signal };
    return { job, io };
  };

  it('a second start of the same run (its first supervisor died right after starting) adopts the container: the command runs once', async () => {
    const backend = new DockerBackend();
    const { job, io } = runOf('echo ran >> ran.txt; echo out; sleep 1; exit 3');
    const first = await backend.start(job, io);
    first.dispose(); // the first supervisor is gone; the container runs on
    const second = await backend.start(job, io);
    expect(second.spawned).toBe(true);
    expect(second.details.containerId).toBe(first.details.containerId);
    const exit = await second.exited;
    expect(exit).toMatchObject({ exitCode: 3, signal: null });
    expect(readFileSync(join(sb.project, 'ran.txt'), 'utf8')).toBe('ran\n');
    expect(readFileSync(io.stdoutPath, 'utf8')).toBe('out\n');
    await second.release();
  });

  it('a container created but never started (its supervisor died in between) is started by the next start, once', async () => {
    const backend = new DockerBackend();
    const { job, io } = runOf('echo ran >> ran-created.txt; echo out');
    const docker = await connect();
    const created = await docker.createContainer(containerSpec(job, io, job.container!));
    const started = await backend.start(job, io);
    expect(started.details.containerId).toBe(created.id);
    expect(await started.exited).toMatchObject({ exitCode: 0 });
    expect(readFileSync(join(sb.project, 'ran-created.txt'), 'utf8')).toBe('ran\n');
    expect(readFileSync(io.stdoutPath, 'utf8')).toBe('out\n');
    await started.release();
  });

  it('cancel during an image pull that cannot finish (a registry that never answers) returns once the run is recorded cancelled', async () => {
    // A registry that accepts connections and never says a word: the engine's pull hangs on it.
    const held: Socket[] = [];
    const registry = createServer((socket) => void held.push(socket));
    await new Promise<void>((resolve) => registry.listen(0, '127.0.0.1', resolve));
    const port = (registry.address() as { port: number }).port;
    try {
      const image = `127.0.0.1:${port}/qwex-test/stalled:1`;
      const r = await qwex(sb, ['run', '-d', '--backend', 'docker', '--image', image, '--pull', 'always', '--', 'true']);
      expect(r.exitCode, String(r.stderr)).toBe(0);
      const id = String(r.stdout).trim();
      await until(() => (held.length > 0 ? true : undefined), 30_000, 'the engine to reach the stalled registry');
      expect(onlyRun().status).toBe('pending');
      const c = await qwex(sb, ['cancel', id]);
      expect(c.exitCode, String(c.stderr)).toBe(0);
      expect(onlyRun()).toMatchObject({ id, status: 'cancelled', endReason: 'cancel' });
      expect(onlyRun().error).toBeUndefined();
      // Nothing was created for it.
      expect(String((await execa('docker', ['ps', '-aq', '--filter', `name=qwex-${id}`])).stdout).trim()).toBe('');
    } finally {
      for (const s of held) s.destroy();
      registry.close();
    }
  }, 90_000);
});
