/**
 * What "no record" means and what it does not: a missing or unparseable
 * file is an expected answer, a file that exists but cannot be read is not,
 * and callers that would act on "no record" (cancel, create again, remove)
 * must not act on it. Permission bits do not stop root, so a run.json that
 * is a directory (EISDIR) and a symlink loop (ELOOP) stand in for EACCES/EIO.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkHostKey } from '../../src/backends/ssh/connection.js';
import { isReadFailure } from '../../src/errors.js';
import { newRunId } from '../../src/new-run-id.js';
import { runDir } from '../../src/paths.js';
import type { Run } from '../../src/run/model.js';
import type { RunIndex } from '../../src/store/run-index.js';
import { readRunRecord } from '../../src/store/run-record.js';
import { findNextAttempt } from '../../src/workflow/attempts.js';
import { readWorkflowIfAny } from '../../src/workflow/record.js';
import { captureArtifacts } from '../../src/workspace/artifacts.js';
import { collectGarbage } from '../../src/workspace/gc.js';
import { ContentStore, snapshotWorkspace } from '../../src/workspace/snapshot.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'qwex-read-failures-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function failureOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a failure');
}

describe('isReadFailure', () => {
  it('is false for a missing or torn record, true for one that exists but cannot be read', () => {
    const dir = join(root, 'run');
    mkdirSync(dir);
    expect(isReadFailure(failureOf(() => readRunRecord(dir)))).toBe(false);
    writeFileSync(join(dir, 'run.json'), '{"version":1,');
    expect(isReadFailure(failureOf(() => readRunRecord(dir)))).toBe(false);
    rmSync(join(dir, 'run.json'));
    mkdirSync(join(dir, 'run.json'));
    expect(isReadFailure(failureOf(() => readRunRecord(dir)))).toBe(true);
  });
});

describe('callers that act on "no record"', () => {
  it('findNextAttempt: a newer run without a record is no attempt; one whose record cannot be read is not taken for none', () => {
    const project = join(root, 'project');
    const run = { id: newRunId(), project, job: {} } as Run;
    const newer = runDir(project, newRunId());
    mkdirSync(newer, { recursive: true });
    expect(findNextAttempt(run)).toBeUndefined();
    mkdirSync(join(newer, 'run.json'));
    expect(() => findNextAttempt(run)).toThrow(/EISDIR/);
  });

  it('readWorkflowIfAny: no record (or a torn one) is no workflow, whose stage runs are cancelled; an unreadable one throws', () => {
    const dir = join(root, 'workflow');
    expect(readWorkflowIfAny(dir)).toBeUndefined();
    mkdirSync(dir);
    writeFileSync(join(dir, 'workflow.json'), '{"version":');
    expect(readWorkflowIfAny(dir)).toBeUndefined();
    rmSync(join(dir, 'workflow.json'));
    mkdirSync(join(dir, 'workflow.json'));
    expect(() => readWorkflowIfAny(dir)).toThrow(/EISDIR/);
  });

  it('gc stops rather than remove a snapshot a run whose record cannot be read may reference', () => {
    const store = new ContentStore(join(root, 'store'));
    const gone = join(root, 'gone');
    const unreadable = join(root, 'unreadable');
    mkdirSync(join(unreadable, 'run.json'), { recursive: true });
    const index = (dirs: string[]): RunIndex => ({ list: () => dirs.map((runDir) => ({ runDir })) }) as unknown as RunIndex;
    expect(collectGarbage(store, index([gone])).manifestsRemoved).toBe(0);
    expect(() => collectGarbage(store, index([gone, unreadable]))).toThrow(/EISDIR/);
  });
});

describe('files that exist but cannot be read are said, not skipped silently', () => {
  it('artifacts: a dangling symlink and a symlink loop are listed as skipped, each with its reason', async () => {
    mkdirSync(join(root, 'out'));
    symlinkSync(join(root, 'nowhere'), join(root, 'out', 'dangling'));
    symlinkSync(join(root, 'out', 'b'), join(root, 'out', 'a'));
    symlinkSync(join(root, 'out', 'a'), join(root, 'out', 'b'));
    const manifest = await captureArtifacts({
      cwd: root,
      projectRoot: root,
      settings: { watch: ['out'], ignore: [], maxFileSizeMb: 1 },
      runId: 'r',
      baseline: new Map(),
      filesDir: join(root, 'files'),
      manifestPath: join(root, 'artifacts.json'),
    });
    expect(manifest.skipped).toEqual([
      { path: 'out/a', reason: 'cannot resolve symlink: ELOOP' },
      { path: 'out/b', reason: 'cannot resolve symlink: ELOOP' },
      { path: 'out/dangling', reason: 'dangling symlink' },
    ]);
  });

  it('snapshot: an ignore file that cannot be read fails it (its rules might keep secrets out)', async () => {
    const project = join(root, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'a.txt'), 'a');
    const store = new ContentStore(join(root, 'store'));
    mkdirSync(join(project, '.gitignore')); // a directory of that name is no ignore file
    await expect(snapshotWorkspace(project, store)).resolves.toMatchObject({ files: [{ path: 'a.txt' }] });
    rmSync(join(project, '.gitignore'), { recursive: true });
    symlinkSync('.gitignore', join(project, '.gitignore'));
    await expect(snapshotWorkspace(project, store)).rejects.toMatchObject({ code: 'QWEX_STATE_UNWRITABLE', message: /\.gitignore could not be read \(ELOOP\)/ });
  });

  it('ssh: a known_hosts that cannot be read refuses the host saying so, not as an unknown host', () => {
    const type = Buffer.from('ssh-ed25519');
    const key = Buffer.concat([Buffer.from([0, 0, 0, type.length]), type, Buffer.alloc(36, 1)]);
    const settings = { alias: 'h', hostname: 'h.example', port: 22 };
    expect(checkHostKey(settings, key, join(root, 'known_hosts'))?.message).toMatch(/not in .*known_hosts: refusing to connect to an unknown host/);
    mkdirSync(join(root, 'known_hosts'));
    expect(checkHostKey(settings, key, join(root, 'known_hosts'))?.message).toMatch(/known_hosts cannot be read \(EISDIR\)/);
  });
});
