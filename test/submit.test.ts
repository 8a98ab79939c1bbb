import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Run } from '../src/run/model.js';
import { CLI, ROOT, qwex, sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

function record(id: string): Run {
  return JSON.parse(readFileSync(join(sb.project, '.qwex', 'runs', id, 'run.json'), 'utf8')) as Run;
}

describe('qwex submit', () => {
  it('reads shell lines and NDJSON specs, starts qwexd if needed, and prints the ids in order', async () => {
    const file = join(sb.project, 'jobs.txt');
    writeFileSync(
      file,
      [
        '# a comment, then a blank line',
        '',
        'echo one | tr a-z A-Z',
        '{"command": ["sh", "-c", "echo two; exit 3"], "name": "second"}',
        '{"command": "echo $GREETING", "env": {"GREETING": "hi"}}',
      ].join('\n'),
    );
    const r = await qwex(sb, ['submit', file, '-e', 'GREETING=default']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toMatch(/started qwexd \(pid \d+\) to queue 3 run\(s\)/);
    const ids = String(r.stdout).split('\n');
    expect(ids).toHaveLength(3);
    expect([...ids].sort()).toEqual(ids);
    const w = await execa('sh', ['-c', `node ${CLI} wait $(cat)`], { input: ids.join('\n'), cwd: sb.project, env: { ...process.env, ...sb.env }, reject: false });
    expect(w.exitCode).toBe(3);
    const logs = ids.map((id) => readFileSync(join(sb.project, '.qwex', 'runs', id, 'stdout.log'), 'utf8'));
    expect(logs).toEqual(['ONE\n', 'two\n', 'hi\n']);
    expect(record(ids[1]!).job.name).toBe('second');
    expect(record(ids[0]!).job.env).toEqual({ GREETING: 'default' });
  });

  it('takes jobs on stdin with -', async () => {
    const r = await execa(process.execPath, [CLI, 'submit', '-'], { input: 'true\ntrue\n', cwd: sb.project, env: { ...process.env, ...sb.env }, reject: false });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split('\n')).toHaveLength(2);
  });

  it('names the line of a bad job and submits nothing', async () => {
    const file = join(sb.project, 'bad.txt');
    writeFileSync(file, 'true\n{"command": ["x"], "colour": "red"}\n');
    const r = await qwex(sb, ['submit', file]);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toContain(`${file}:2: unknown key "colour"`);
    const missing = await qwex(sb, ['submit', join(sb.project, 'nope.txt')]);
    expect(missing.exitCode).toBe(2);
    expect(String(missing.stderr)).toMatch(/cannot read .*nope\.txt: ENOENT/);
  });
});

describe('the SDK', () => {
  it('submit() and wait() make the same calls as the CLI', async () => {
    const script = `
      import { submit, wait } from ${JSON.stringify(join(ROOT, 'dist', 'src', 'sdk.js'))};
      const runs = await submit([{ command: ['sh', '-c', 'echo sdk; exit 2'], name: 'from-sdk' }, { command: 'true' }]);
      const done = await wait(runs);
      console.log(JSON.stringify(done.map((r) => [r.job.name ?? null, r.status, r.exitCode])));
    `;
    const r = await execa(process.execPath, ['--input-type=module', '-e', script], { cwd: sb.project, env: { ...process.env, ...sb.env }, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([['from-sdk', 'failed', 2], [null, 'succeeded', 0]]);
  });
});
