import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI, FIXTURES, ROOT, qwex, sandbox, type Sandbox } from './helpers.js';

/**
 * The client must not load zod at run time: protocol types come from the
 * schemas by `import type` only. Checked for real, in child processes with
 * a module probe preloaded (fixtures/module-probe.mjs), on the unbundled
 * client module graph (dist/src, the SDK's) and on the bundled CLI running
 * `qwex ps` against a real qwexd. Each check has a positive control that
 * does load zod, so that a probe that sees nothing cannot pass them.
 */
interface Probe {
  esm: string[];
  cjs: string[];
  zodGlobal: boolean;
}

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

async function probe(args: string[], env: Record<string, string> = {}): Promise<{ probe: Probe; stdout: string }> {
  const out = join(dirname(sb.project), `probe-${Date.now()}-${Math.random()}.txt`);
  const r = await execa(process.execPath, ['--import', join(FIXTURES, 'module-probe.mjs'), ...args], {
    cwd: sb.project,
    env: { ...sb.env, ...env, QWEX_MODULE_PROBE_OUT: out },
    reject: false,
  });
  expect(r.exitCode, r.stderr).toBe(0);
  const lines = readFileSync(out, 'utf8').trim().split('\n');
  const last = JSON.parse(lines.at(-1)!) as Omit<Probe, 'esm'>;
  return { probe: { esm: lines.slice(0, -1), ...last }, stdout: r.stdout };
}

const zodUrls = (p: Probe): string[] => [...p.esm, ...p.cjs].filter((u) => /[/\\]node_modules[/\\]zod[/\\]/.test(u));

describe('the client loads no zod', () => {
  it('the client module graph (src/daemon-client.ts and protocol.ts, as the SDK loads them)', async () => {
    const client = await probe(['-e', `await import(${JSON.stringify(join(ROOT, 'dist', 'src', 'daemon-client.js'))}); await import(${JSON.stringify(join(ROOT, 'dist', 'src', 'protocol.js'))})`]);
    expect(client.probe.esm.some((u) => u.endsWith('/dist/src/daemon-client.js'))).toBe(true);
    expect(zodUrls(client.probe)).toEqual([]);
    expect(client.probe.zodGlobal).toBe(false);
    // Control: the schema module does load it, and the probe sees it both ways.
    const schemas = await probe(['-e', `await import(${JSON.stringify(join(ROOT, 'dist', 'src', 'protocol-schemas.js'))})`]);
    expect(zodUrls(schemas.probe).length).toBeGreaterThan(0);
    expect(schemas.probe.zodGlobal).toBe(true);
  });

  it('the bundled CLI running `qwex ps` through a real qwexd', async () => {
    expect((await qwex(sb, ['daemon', 'start'])).exitCode).toBe(0);
    expect((await qwex(sb, ['run', '--', 'true'])).exitCode).toBe(0);
    const ps = await probe([CLI, 'ps', '--json']);
    expect(JSON.parse(ps.stdout)).toHaveLength(1);
    expect(ps.probe.zodGlobal).toBe(false);
    expect(zodUrls(ps.probe)).toEqual([]);
    // Control: the bundled qwexd has zod in it, and the probe sees it run.
    const qwexd = await probe([join(ROOT, 'dist', 'daemon', 'qwexd.js'), '--version']);
    expect(qwexd.probe.zodGlobal).toBe(true);
  });
});
