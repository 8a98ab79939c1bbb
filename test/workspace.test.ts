import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Run } from '../src/run/model.js';
import { ContentStore, snapshotWorkspace } from '../src/workspace/snapshot.js';
import { qwex, qwexJson, sandbox, until, type Sandbox } from './helpers.js';
import { AS_NOBODY, checkoutForNobody, skipUnlessCi } from './unprivileged.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

const write = (rel: string, text: string): void => {
  mkdirSync(join(sb.project, rel, '..'), { recursive: true });
  writeFileSync(join(sb.project, rel), text);
};
const record = (id: string): Run => JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as Run;
const stdout = (id: string): string => readFileSync(join(sb.project, '.qwex', 'runs', id, 'stdout.log'), 'utf8');
const store = (): ContentStore => new ContentStore(join(sb.state, 'store'));

describe('workspace snapshots', () => {
  it('a queued run runs the code as it was when submitted, though the file was edited since', async () => {
    write('train.py', 'version 1\n');
    expect((await qwex(sb, ['daemon', 'start', '--concurrency', '1'])).exitCode).toBe(0);
    const blocker = String((await qwex(sb, ['run', '-d', '--', 'sleep', '1.5'])).stdout);
    const queued = String((await qwex(sb, ['run', '-d', '--', 'cat', 'train.py'])).stdout);
    write('train.py', 'version 2\n');
    expect((await qwex(sb, ['wait', blocker, queued])).exitCode).toBe(0);
    expect(stdout(queued)).toBe('version 1\n');
    // In place (the foreground default), the run sees the file as it is.
    const now = await qwex(sb, ['run', '-q', '--', 'cat', 'train.py']);
    expect(String(now.stdout)).toBe('version 2');
    // The run's copy is gone once it is recorded; the record says which snapshot it ran.
    expect(existsSync(join(sb.project, '.qwex', 'runs', queued, 'workspace'))).toBe(false);
    expect(record(queued).job.workspace?.manifest).toMatch(/^[0-9a-f]{64}$/);
    const diff = await qwexJson<{ changed: string[] }>(sb, ['diff', queued]);
    expect(diff.changed).toEqual(['train.py']);
  });

  it('two concurrent runs writing the same relative path do not see each other, nor touch the project', async () => {
    write('shared.txt', 'original\n');
    const script = (tag: string): string => `echo ${tag} > shared.txt; sleep 0.5; cat shared.txt`;
    const a = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', script('A')])).stdout);
    const b = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', script('B')])).stdout);
    await qwex(sb, ['wait', a, b]);
    expect([stdout(a), stdout(b)]).toEqual(['A\n', 'B\n']);
    expect(readFileSync(join(sb.project, 'shared.txt'), 'utf8')).toBe('original\n');
  });

  it('leaves out .gitignore and .qwexignore paths (additive, with negation), links them into the copy instead', async () => {
    write('.gitignore', '*.log\nbuild/\n');
    write('.qwexignore', 'data/\n!keep.log\n');
    write('keep.log', 'kept');
    write('drop.log', 'dropped');
    write('build/x.o', 'obj');
    write('data/big.bin', 'large data');
    write('src/main.py', 'code');
    write('src/.gitignore', 'local.cfg\n');
    write('src/local.cfg', 'secret-ish');
    const manifest = await snapshotWorkspace(sb.project, store(), { exclude: ['out'] });
    expect(manifest.files.map((f) => f.path)).toEqual(['.gitignore', '.qwexignore', 'keep.log', 'src/.gitignore', 'src/main.py']);
    expect(manifest.linked.sort()).toEqual(['build', 'data', 'drop.log', 'src/local.cfg']);
    // The large-data policy: the run reads data/ through a link to the original.
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'cat data/big.bin; test -L data && echo linked'])).stdout);
    await qwex(sb, ['wait', id]);
    expect(stdout(id)).toBe('large datalinked\n');
  });

  it('keeps symlinks as they are: one inside the project points into the copy, one outside still reaches outside', async () => {
    write('real.txt', 'inside');
    symlinkSync('real.txt', join(sb.project, 'rel-link'));
    const outside = join(sb.project, '..', 'outside.txt');
    writeFileSync(outside, 'outside');
    symlinkSync(outside, join(sb.project, 'abs-link'));
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'cat rel-link; echo; cat abs-link; echo; readlink rel-link'])).stdout);
    await qwex(sb, ['wait', id]);
    expect(stdout(id)).toBe('inside\noutside\nreal.txt\n');
  });

  it('stores an unchanged file once: a second snapshot of the same tree adds no object', async () => {
    for (let i = 0; i < 20; i++) write(`src/f${i}.txt`, `file ${i}`);
    write('dup-a.txt', 'same');
    write('dup-b.txt', 'same');
    const objects = (): number => readdirSync(join(sb.state, 'store', 'objects')).reduce((n, d) => n + readdirSync(join(sb.state, 'store', 'objects', d)).length, 0);
    const first = await snapshotWorkspace(sb.project, store());
    expect(objects()).toBe(21);
    const second = await snapshotWorkspace(sb.project, store());
    expect(second.id).toBe(first.id);
    expect(objects()).toBe(21);
    write('src/f0.txt', 'changed');
    await snapshotWorkspace(sb.project, store());
    expect(objects()).toBe(22);
  });

  it('gc keeps what runs reference and removes the rest (past the grace period)', async () => {
    write('a.txt', 'kept by a run');
    const id = String((await qwex(sb, ['run', '-d', '--snapshot', '--', 'true'])).stdout);
    await qwex(sb, ['wait', id]);
    write('a.txt', 'only in an orphan snapshot');
    const orphan = await snapshotWorkspace(sb.project, store());
    // Age everything past the grace period, then collect.
    const { collectGarbage } = await import('../src/workspace/gc.js');
    const { RunIndex } = await import('../src/store/run-index.js');
    const index = RunIndex.open(join(sb.state, 'index.db'));
    try {
      const report = collectGarbage(store(), index, Date.now() + 2 * 60 * 60 * 1000);
      expect(report.manifestsRemoved).toBe(1);
      expect(report.objectsRemoved).toBe(1);
    } finally {
      index.close();
    }
    expect(existsSync(join(sb.state, 'store', 'manifests', `${orphan.id}.json`))).toBe(false);
    expect(existsSync(join(sb.state, 'store', 'manifests', `${record(id).job.workspace!.manifest}.json`))).toBe(true);
    const r = await qwexJson<{ objectsRemoved: number }>(sb, ['gc']);
    expect(r.objectsRemoved).toBe(0); // within the grace period nothing goes
  });

  it('records provenance: git commit, branch and dirtiness, or none without git', async () => {
    write('a.txt', 'x');
    const noGit = String((await qwex(sb, ['run', '-d', 'true'])).stdout);
    await qwex(sb, ['wait', noGit]);
    expect(record(noGit).provenance).toEqual({ manifest: record(noGit).job.workspace!.manifest });
    await execa('git', ['init', '-q', '-b', 'main'], { cwd: sb.project });
    await execa('git', ['add', 'a.txt'], { cwd: sb.project });
    await execa('git', ['-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', 'one'], { cwd: sb.project });
    const head = (await execa('git', ['rev-parse', 'HEAD'], { cwd: sb.project })).stdout;
    const clean = String((await qwex(sb, ['run', '-d', 'true'])).stdout);
    write('a.txt', 'edited');
    const dirty = String((await qwex(sb, ['run', '-d', 'true'])).stdout);
    await qwex(sb, ['wait', clean, dirty]);
    expect(record(clean).provenance!.git).toEqual({ commit: head, branch: 'main', dirty: false });
    expect(record(dirty).provenance!.git).toEqual({ commit: head, branch: 'main', dirty: true });
  });

  it('fails before the run starts when the workspace is too big, naming the largest directories', async () => {
    write('qwex.yaml', 'workspace_max_mb: 0.001\n');
    write('models/w.bin', 'x'.repeat(3000));
    write('small.txt', 'y');
    const r = await qwex(sb, ['run', '-d', 'true']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toMatch(/larger than workspace_max_mb .*largest: models/);
    expect(existsSync(join(sb.project, '.qwex', 'runs'))).toBe(false);
  });

  it('a file that cannot be read is an error, not a silently smaller tree', async (ctx) => {
    write('secret.txt', 'x');
    await execa('chmod', ['000', join(sb.project, 'secret.txt')]);
    if (process.getuid?.() !== 0) {
      const r = await qwex(sb, ['run', '-d', 'true']);
      expect(r.exitCode).toBe(6);
      expect(String(r.stderr)).toMatch(/secret\.txt could not be read/);
      return;
    }
    // Permission bits do not stop root: snapshot as the unprivileged user `nobody` instead, from a checkout it can
    // reach (a private one, in a 0700 home, is staged in a copy).
    const checkout = await checkoutForNobody();
    if ('reason' in checkout) return skipUnlessCi(ctx, checkout.reason);
    const shared = mkdtempSync(join(tmpdir(), 'qwex-nobody-'));
    try {
      await execa('chmod', ['-R', 'a+rwX', shared]);
      await execa('cp', ['-a', join(sb.project, '.'), join(shared, 'project')]);
      await execa('chmod', ['a+rwx', join(shared, 'project')]);
      const script = `
        const { ContentStore, snapshotWorkspace } = await import(${JSON.stringify(join(checkout.root, 'dist', 'src', 'workspace', 'snapshot.js'))});
        try { await snapshotWorkspace(${JSON.stringify(join(shared, 'project'))}, new ContentStore(${JSON.stringify(join(shared, 'store'))})); console.log('no error'); }
        catch (e) { console.log(e.code + ': ' + e.message); }`;
      const r = await execa('setpriv', [...AS_NOBODY, process.execPath, '--input-type=module', '-e', script], { reject: false });
      expect(r.stdout, String(r.stderr)).toMatch(/^QWEX_STATE_UNWRITABLE: cannot snapshot the workspace: secret\.txt could not be read \(EACCES\)/);
    } finally {
      rmSync(shared, { recursive: true, force: true });
      checkout.cleanup();
    }
  });

  it('artifacts come from the run\'s own out/, which starts empty', async () => {
    write('out/stale.txt', 'from before');
    const id = String((await qwex(sb, ['run', '-d', '--', 'sh', '-c', 'ls out 2>/dev/null | wc -l; mkdir -p out; echo new > out/new.txt'])).stdout);
    await qwex(sb, ['wait', id]);
    expect(stdout(id).trim()).toBe('0');
    const manifest = await qwexJson<{ files: { path: string }[] }>(sb, ['artifacts', id]);
    expect(manifest.files.map((f) => f.path)).toEqual(['out/new.txt']);
    await until(() => (existsSync(join(sb.project, '.qwex', 'runs', id, 'files', 'out', 'new.txt')) ? true : undefined));
    const copied = await qwex(sb, ['artifacts', id, '--copy-to', 'results']);
    expect(copied.exitCode).toBe(0);
    expect(readFileSync(join(sb.project, 'results', 'out', 'new.txt'), 'utf8')).toBe('new\n');
  });
});
