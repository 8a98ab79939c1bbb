/**
 * The layers the code must keep, checked on the source itself (what a lint
 * rule cannot say): which folder may import which; that nothing outside a
 * backend's folder reaches into it, names a backend, or reads a run's
 * backend details; and that no source file grows past ~400 lines unless it
 * says why.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BACKEND_NAMES } from '../../src/backends/registry.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LAYERS = ['src', 'client', 'daemon', 'server'];

function sources(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return /\.ts$/.test(name) && !name.endsWith('.d.ts') ? [path] : [];
  });
}

const FILES = LAYERS.flatMap((layer) => sources(join(ROOT, layer))).map((path) => ({ path, rel: relative(ROOT, path).split(sep).join('/'), text: readFileSync(path, 'utf8') }));

/** Relative import targets of a file, as paths from the project root. */
function imports(file: { path: string; text: string }): string[] {
  const found = [...file.text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]!);
  return found.map((spec) => relative(ROOT, resolve(dirname(file.path), spec)).split(sep).join('/'));
}

/** The backend folder a path is in (src/backends/<name>/...), if any. */
function backendFolder(rel: string): string | undefined {
  return /^src\/backends\/([^/]+)\//.exec(rel)?.[1];
}

/** Code without its comments, so prose about "the Docker engine" does not count as naming a backend. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

describe('the layers', () => {
  it('finds the sources it checks', () => {
    expect(FILES.length).toBeGreaterThan(50);
  });

  it('src/ never imports client/, daemon/ or server/; client/ and daemon/ never import each other; server/ never imports client/', () => {
    const bad: string[] = [];
    for (const file of FILES) {
      const layer = file.rel.split('/')[0]!;
      const forbidden: Record<string, string[]> = { src: ['client', 'daemon', 'server'], client: ['daemon', 'server'], daemon: ['client', 'server'], server: ['client'] };
      for (const target of imports(file)) {
        if ((forbidden[layer] ?? []).includes(target.split('/')[0]!)) bad.push(`${file.rel} imports ${target}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('nothing outside a backend\'s folder imports its internals (only the registry imports its index)', () => {
    const bad: string[] = [];
    for (const file of FILES) {
      const own = backendFolder(file.rel);
      for (const target of imports(file)) {
        const folder = backendFolder(target);
        if (folder === undefined || folder === own) continue;
        if (file.rel === 'src/backends/registry.ts' && target === `src/backends/${folder}/index.js`) continue;
        bad.push(`${file.rel} imports ${target}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('no code outside a backend\'s folder names a backend', () => {
    expect(BACKEND_NAMES.length).toBeGreaterThan(0);
    const names = new RegExp(`(['"\`])(${BACKEND_NAMES.join('|')})\\1`);
    const bad: string[] = [];
    for (const file of FILES) {
      if (backendFolder(file.rel) !== undefined) continue;
      const lines = code(file.text).split('\n');
      lines.forEach((line, i) => {
        if (names.test(line)) bad.push(`${file.rel}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(bad).toEqual([]);
  });

  it('no code outside a backend\'s folder reads a run\'s backend details (only its name)', () => {
    const bad: string[] = [];
    for (const file of FILES) {
      if (backendFolder(file.rel) !== undefined) continue;
      const lines = code(file.text).split('\n');
      lines.forEach((line, i) => {
        if (/\brun\.backend\.(?!name\b)\w+|\.backend\[['"]/.test(line)) bad.push(`${file.rel}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(bad).toEqual([]);
  });

  it('no source file is over ~400 lines unless it says why at its top', () => {
    const long = FILES.filter((f) => f.text.split('\n').length > 420 && !/^\/\/ Long because|^\/\*\*?\s*\n?\s*\*? ?Long because/m.test(f.text.slice(0, 600)));
    expect(long.map((f) => `${f.rel} (${f.text.split('\n').length} lines)`)).toEqual([]);
  });
});
