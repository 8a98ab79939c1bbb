import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ArtifactManifest } from '../src/workspace/artifacts.js';
import type { Run } from '../src/run/model.js';
import { FIXTURES, qwex, qwexJson, sandbox, type Sandbox } from './helpers.js';

const node = process.execPath;
const writer = join(FIXTURES, 'write-artifacts.mjs');

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

function lastRun(): { id: string; dir: string; run: Run; manifest: ArtifactManifest } {
  const ids = readdirSync(join(sb.project, '.qwex', 'runs')).sort();
  const id = ids[ids.length - 1]!;
  const dir = join(sb.project, '.qwex', 'runs', id);
  return {
    id,
    dir,
    run: JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')) as Run,
    manifest: JSON.parse(readFileSync(join(dir, 'artifacts.json'), 'utf8')) as ArtifactManifest,
  };
}

const sha = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

describe('artifact capture', () => {
  it('copies what the run wrote under out/, keeping paths, with sha256', async () => {
    const r = await qwex(sb, ['run', node, writer, 'out/model.pth=5000', 'out/sub/metrics.json=10', 'elsewhere.txt=3']);
    expect(r.exitCode).toBe(0);
    const { dir, run, manifest } = lastRun();
    expect(manifest.files.map((f) => f.path)).toEqual(['out/model.pth', 'out/sub/metrics.json']);
    const model = readFileSync(join(dir, 'files', 'out', 'model.pth'));
    expect(model.length).toBe(5000);
    expect(manifest.files[0]).toEqual({ path: 'out/model.pth', size: 5000, sha256: sha(model) });
    expect(run.artifacts).toEqual({ count: 2, bytes: 5010, skipped: 0 });
    expect(String(r.stderr)).toMatch(/2 artifacts \(5\.0 kB\)/);
    const listed = await qwexJson<ArtifactManifest>(sb, ['artifacts', run.id.slice(0, 16)]);
    expect(listed).toEqual(manifest);
  });

  it('captures only files the run created or changed, not stale ones', async () => {
    mkdirSync(join(sb.project, 'out'));
    writeFileSync(join(sb.project, 'out', 'stale.txt'), 'old');
    writeFileSync(join(sb.project, 'out', 'rewritten.txt'), 'old');
    await qwex(sb, ['run', '--', 'sh', '-c', 'sleep 0.05; echo new > out/new.txt; echo changed > out/rewritten.txt']);
    expect(lastRun().manifest.files.map((f) => f.path)).toEqual(['out/new.txt', 'out/rewritten.txt']);
    // A second run that writes nothing captures nothing.
    await qwex(sb, ['run', 'true']);
    expect(lastRun().manifest.files).toEqual([]);
  });

  it('skips ignore patterns and files over max_file_size_mb, and says why', async () => {
    mkdirSync(join(sb.project, '.qwex'), { recursive: true });
    writeFileSync(join(sb.project, '.qwex', 'config.yaml'), 'artifacts:\n  max_file_size_mb: 1\n  ignore: ["*.tmp", "__pycache__", "*.log", "!keep.log"]\n');
    await qwex(sb, ['run', node, writer, 'out/a.tmp=1', 'out/__pycache__/m.pyc=1', 'out/run.log=1', 'out/keep.log=1', 'out/big.bin=2000000', 'out/ok.bin=999']);
    const { manifest } = lastRun();
    expect(manifest.files.map((f) => f.path)).toEqual(['out/keep.log', 'out/ok.bin']);
    expect(manifest.skipped).toEqual([{ path: 'out/big.bin', reason: 'larger than max_file_size_mb (1)' }]);
  });

  it('--watch overrides the watched directories for one run', async () => {
    await qwex(sb, ['run', '--watch', 'models,outputs/', node, writer, 'models/m.bin=4', 'outputs/o.txt=2', 'out/ignored.txt=1']);
    expect(lastRun().manifest.files.map((f) => f.path)).toEqual(['models/m.bin', 'outputs/o.txt']);
    expect(lastRun().run.job.artifacts.watch).toEqual(['models', 'outputs']);
  });

  it('never follows a symlink out of the project', async () => {
    writeFileSync(join(sb.project, 'inside.txt'), 'inside content');
    const outside = join(sb.project, '..', 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret.txt'), 'outside content');
    mkdirSync(join(sb.project, 'out'));
    symlinkSync(join(outside, 'secret.txt'), join(sb.project, 'out', 'escape.txt'));
    symlinkSync(outside, join(sb.project, 'out', 'escape-dir'));
    symlinkSync('../inside.txt', join(sb.project, 'out', 'inner.txt'));
    symlinkSync(join(sb.project, 'nowhere'), join(sb.project, 'out', 'dangling'));
    // Links that escape are reported as skipped; the link to a file inside was there before the run, so it is stale.
    await qwex(sb, ['run', node, writer, 'out/real.txt=1']);
    const { dir, manifest } = lastRun();
    expect(manifest.files.map((f) => f.path)).toEqual(['out/real.txt']);
    expect(manifest.skipped).toEqual(expect.arrayContaining([
      { path: 'out/dangling', reason: 'dangling symlink' },
      { path: 'out/escape-dir', reason: 'symlink points outside the project' },
      { path: 'out/escape.txt', reason: 'symlink points outside the project' },
    ]));
    expect(existsSync(join(dir, 'files', 'out', 'escape.txt'))).toBe(false);

    // Links created by the run: the one inside the project is captured as its target's content.
    await qwex(sb, ['run', '--watch', 'gen', '--', 'sh', '-c', `mkdir -p gen && ln -s ../inside.txt gen/inner.txt && ln -s ${join(outside, 'secret.txt')} gen/escape.txt`]);
    const second = lastRun();
    expect(second.manifest.files).toEqual([{ path: 'gen/inner.txt', size: 14, sha256: sha('inside content') }]);
    expect(readFileSync(join(second.dir, 'files', 'gen', 'inner.txt'), 'utf8')).toBe('inside content');
    expect(second.manifest.skipped).toEqual([{ path: 'gen/escape.txt', reason: 'symlink points outside the project' }]);
  });

  it('skips a watched directory that is itself a link to outside the project', async () => {
    const outside = join(sb.project, '..', 'elsewhere');
    mkdirSync(outside);
    symlinkSync(outside, join(sb.project, 'out'));
    await qwex(sb, ['run', '--', 'sh', '-c', 'echo x > out/file.txt']);
    const { manifest } = lastRun();
    expect(manifest.files).toEqual([]);
    expect(manifest.skipped).toEqual([{ path: 'out', reason: 'watched directory resolves outside the project' }]);
  });
});

describe('artifact capture on a full disk', () => {
  it('records the run and says capture failed when the disk fills up', async (ctx) => {
    const mount = await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', sb.project], { reject: false });
    if (mount.exitCode !== 0) {
      const reason = `cannot mount a small tmpfs to fill (${String(mount.stderr).trim() || 'mount failed'}); needs root`;
      if (process.env.QWEX_REQUIRE_MOUNT === '1') throw new Error(`QWEX_REQUIRE_MOUNT=1 but ${reason}`);
      console.log(`skipped: ${reason}`);
      ctx.skip();
    }
    try {
      // 700 kB written by the run; copying it into files/ does not fit in the 1 MB filesystem.
      const r = await qwex(sb, ['run', node, writer, 'out/big.bin=700000']);
      expect(r.exitCode).toBe(0);
      const { dir, run, manifest } = lastRun();
      expect(run.status).toBe('succeeded');
      expect(run.artifacts?.error).toMatch(/no space left on device/);
      expect(manifest.error).toMatch(/no space left on device/);
      expect(existsSync(join(dir, 'files', 'out', 'big.bin'))).toBe(false);
      expect(String(r.stderr)).toMatch(/no space left on device/);
    } finally {
      await execa('umount', ['-l', sb.project], { reject: false });
    }
  });
});
