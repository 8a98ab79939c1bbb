import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';

// The benchmark itself is `npm run bench` (not part of the tests); this only checks that it runs and reports.
describe('npm run bench, smoke mode', () => {
  it('runs every comparison with tiny counts and writes a Markdown and a JSON report', async () => {
    const out = mkdtempSync(join(tmpdir(), 'qwex-bench-out-'));
    try {
      const r = await execa(process.execPath, [join(ROOT, 'bench', 'bench.mjs'), '--smoke', '--out', out], { reject: false, env: { ...process.env, QWEX_NO_DAEMON: '' } });
      expect(r.exitCode, r.stderr).toBe(0);
      const files = readdirSync(out).sort();
      expect(files.map((f) => f.replace(/^.*-smoke/, '*'))).toEqual(['*.json', '*.md']);
      const report = JSON.parse(readFileSync(join(out, files[0]!), 'utf8')) as {
        meta: { cpus: number; node: string };
        goals: { measure: string; met: boolean }[];
        sections: { name: string; rows: { variant: string; value: number }[] }[];
      };
      expect(report.meta.node).toBe(process.version);
      expect(report.sections.map((s) => s.name)).toEqual(
        expect.arrayContaining(['CLI start-up', 'Log follow (qwex attach)', 'qwexd resource use']),
      );
      for (const section of report.sections) for (const row of section.rows) expect(Number.isFinite(row.value), `${section.name}: ${row.variant}`).toBe(true);
      expect(report.goals.map((g) => g.measure)).toEqual(expect.arrayContaining(['attach latency, 99th percentile', 'idle qwexd RSS (settled)']));
      expect(readFileSync(join(out, files[1]!), 'utf8')).toMatch(/^# qwex benchmark \(smoke\)/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 180_000);
});
