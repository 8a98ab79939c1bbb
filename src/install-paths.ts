import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where this installation of qwex lives: the directory of its package.json,
 * found by walking up from this module. It works the same from the
 * TypeScript sources (tests), from dist/ and from the bundled entry points,
 * wherever a bundler put this code.
 */
let root: string | undefined;

export function packageRoot(): string {
  if (root !== undefined) return root;
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'qwex') return (root = dir);
      } catch {
        // not ours; keep looking
      }
    }
    if (dirname(dir) === dir) throw new Error('cannot find the qwex installation (no package.json named qwex above this module)');
  }
}

/** A file of this installation, e.g. installPath('libexec', 'qwex-shim.pl'). */
export function installPath(...parts: string[]): string {
  return join(packageRoot(), ...parts);
}
