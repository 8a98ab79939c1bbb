import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI, FIXTURES, qwex, qwexJson, sandbox, type Sandbox } from './helpers.js';

/**
 * `qwex run` in its plain forms takes the quick path (client/quick.ts):
 * checked on the built CLI against a real qwexd, by what it loads (module
 * probe, fixtures/module-probe.mjs) and by what it does, next to the same
 * command given to the full parser (an argument only it takes, --no-color,
 * with NO_COLOR=1 set anyway so that the output is the same).
 */
let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

/**
 * The sources bundled into the modules a `qwex` command loads, read from
 * esbuild's `// path` comments in each chunk, and its result.
 */
async function loadedSources(args: string[]): Promise<{ sources: Set<string>; stdout: string; exitCode: number }> {
  const out = join(dirname(sb.project), `probe-${Date.now()}-${Math.random()}.txt`);
  const r = await execa(process.execPath, ['--import', join(FIXTURES, 'module-probe.mjs'), CLI, ...args], {
    cwd: sb.project,
    env: { ...sb.env, QWEX_MODULE_PROBE_OUT: out },
    reject: false,
  });
  const urls = readFileSync(out, 'utf8').trim().split('\n').slice(0, -1);
  const sources = new Set<string>();
  for (const url of urls.filter((u) => u.startsWith('file:'))) {
    for (const m of readFileSync(fileURLToPath(url), 'utf8').matchAll(/^\/\/ ((?:src|client|node_modules)\/\S+)$/gm)) sources.add(m[1]!);
  }
  return { sources, stdout: r.stdout, exitCode: r.exitCode ?? -1 };
}

describe('qwex run on the quick path', () => {
  it('a detached run through qwexd loads neither the command-line parser nor what only waiting, following or named jobs need', async () => {
    expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
    const quick = await loadedSources(['run', '-d', 'true']);
    expect(quick.exitCode).toBe(0);
    expect(quick.stdout.trim()).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(quick.sources).toContain('client/commands/run.ts');
    expect(quick.sources).toContain('src/daemon-client.ts');
    const loaded = [...quick.sources];
    for (const unwanted of ['node_modules/commander/', 'src/watcher.ts', 'src/service/direct.ts', 'src/workflow/plan.ts', 'src/workflow/definition.ts', 'client/progress.ts', 'client/render.ts', 'client/foreground.ts']) {
      expect(loaded.filter((s) => s.startsWith(unwanted)), unwanted).toEqual([]);
    }
    // Control: the same run through the full parser loads commander, and the probe sees it.
    const full = await loadedSources(['run', '--no-color', '-d', 'true']);
    expect(full.exitCode).toBe(0);
    expect([...full.sources].some((s) => s.startsWith('node_modules/commander/'))).toBe(true);
  });

  it('records the same run, and prints the same, as the full parser', async () => {
    expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
    const args = ['-d', '--json', '-e', 'GREETING=hi', '--name', 'same', '--timeout', '5m', '--', 'sh', '-c', 'echo "$GREETING"'];
    const quick = await qwex(sb, ['run', ...args]);
    const full = await qwex(sb, ['run', '--no-color', ...args]);
    expect(quick.exitCode, quick.stderr).toBe(0);
    expect(full.exitCode, full.stderr).toBe(0);
    const [a, b] = [JSON.parse(quick.stdout) as Record<string, unknown>, JSON.parse(full.stdout) as Record<string, unknown>];
    // The run's own id, time and progress so far differ; everything it was asked to be (job, provenance...) is the same.
    const asked = (r: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(Object.entries(r).filter(([k]) => !['id', 'createdAt', 'status', 'exitCode', 'signal', 'supervisor'].includes(k)));
    expect(asked(a)).toEqual(asked(b));
    expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
    const done = await qwexJson<{ status: string; exitCode: number }[]>(sb, ['wait', a.id as string, b.id as string]);
    expect(done.map((r) => [r.status, r.exitCode])).toEqual([
      ['succeeded', 0],
      ['succeeded', 0],
    ]);
    for (const id of [a.id, b.id]) expect((await qwex(sb, ['logs', id as string])).stdout).toBe('hi');
  });

  it('fails as the full parser does: the same message, hint and exit code, as text and as JSON', async () => {
    for (const args of [['-d'], ['--set', 'x=1', 'true'], ['--timeout', 'soon', 'true'], ['-e', '1BAD=x', 'true'], ['--after', '019aa011', '--after-any', '019aa012', 'true']]) {
      for (const json of [[], ['--json']]) {
        const quick = await qwex(sb, ['run', ...json, ...args]);
        const full = await qwex(sb, ['run', '--no-color', ...json, ...args]);
        expect(quick.exitCode, `${args.join(' ')}: ${quick.stderr}`).toBe(2);
        expect([quick.exitCode, quick.stderr, quick.stdout], args.join(' ')).toEqual([full.exitCode, full.stderr, full.stdout]);
      }
    }
  });
});
