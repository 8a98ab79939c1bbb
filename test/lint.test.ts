/**
 * The lint rules (eslint.config.js: no floating promises, type-only imports,
 * the layers) hold over the whole tree. A test rather than a step before the
 * tests, so that a lint error is reported as one failure and the rest of the
 * suite still runs. `npm run lint` runs the same.
 */
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';

describe('lint', () => {
  it('eslint reports nothing', async () => {
    const r = await execa('npx', ['eslint', '--max-warnings', '0', 'src', 'client', 'daemon', 'server', 'test', 'scripts', 'bench'], { cwd: ROOT, reject: false, timeout: 240_000 });
    expect(r.exitCode, `${String(r.stdout)}\n${String(r.stderr)}`).toBe(0);
  }, 300_000);
});
