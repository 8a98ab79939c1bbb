/**
 * The documentation holds together: every relative link in README.md and
 * docs/ reaches an existing file (and, with a #fragment, an existing heading
 * there), every docs page is reachable from the README, and the README stays
 * a short first page with the set-up and test commands.
 *
 * Links are read with markdown-it and headings slugged with github-slugger
 * (GitHub's own algorithm), so that code spans, fenced blocks and heading
 * punctuation are treated as GitHub renders them.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import GithubSlugger from 'github-slugger';
import MarkdownIt from 'markdown-it';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SETUP_COMMAND = 'npm ci && npx qwex run -- echo "hello from qwex"';
const README_MAX_LINES = 200;

const md = new MarkdownIt();
type Token = ReturnType<MarkdownIt['parse']>[number];

/** README.md and every Markdown file under docs/, relative to root. */
function markdownFiles(root: string): string[] {
  const docs = readdirSync(join(root, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((p) => p.endsWith('.md'))
    .map((p) => join('docs', p));
  return ['README.md', ...docs].sort();
}

function inlineTokens(tokens: Token[]): Token[] {
  return tokens.flatMap((t) => [t, ...(t.children ?? [])]);
}

/** Every link and image target in a Markdown text. */
function linkTargets(text: string): string[] {
  return inlineTokens(md.parse(text, {})).flatMap((t) => {
    const target = t.type === 'link_open' ? t.attrGet('href') : t.type === 'image' ? t.attrGet('src') : null;
    return target === null ? [] : [target];
  });
}

/** The anchors GitHub gives a Markdown text's headings. */
function headingAnchors(text: string): Set<string> {
  const slugger = new GithubSlugger();
  const tokens = md.parse(text, {});
  const anchors = new Set<string>();
  tokens.forEach((t, i) => {
    if (t.type !== 'heading_open') return;
    const words = (tokens[i + 1]?.children ?? []).filter((c) => c.type === 'text' || c.type === 'code_inline').map((c) => c.content);
    anchors.add(slugger.slug(words.join('')));
  });
  return anchors;
}

const isExternal = (target: string): boolean => /^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//');

/** "file: target (why)" for each relative link under root that leads nowhere. */
function brokenLinks(root: string, files: string[]): string[] {
  const problems: string[] = [];
  for (const file of files) {
    for (const target of linkTargets(readFileSync(join(root, file), 'utf8'))) {
      if (isExternal(target)) continue;
      const [pathPart = '', fragment] = target.split('#', 2);
      const path = pathPart === '' ? join(root, file) : resolve(root, dirname(file), decodeURIComponent(pathPart));
      let isFile: boolean;
      try {
        isFile = statSync(path).isFile();
      } catch {
        problems.push(`${file}: ${target} (no such file)`);
        continue;
      }
      if (fragment === undefined || fragment === '') continue;
      if (!isFile || !path.endsWith('.md')) {
        problems.push(`${file}: ${target} (a #fragment on something that is not a Markdown file)`);
      } else if (!headingAnchors(readFileSync(path, 'utf8')).has(decodeURIComponent(fragment))) {
        problems.push(`${file}: ${target} (no heading with that anchor in ${relative(root, path)})`);
      }
    }
  }
  return problems;
}

/** The files, relative to root, that a Markdown file links to. */
function linkedFiles(root: string, file: string): Set<string> {
  const linked = linkTargets(readFileSync(join(root, file), 'utf8'))
    .filter((t) => !isExternal(t) && !t.startsWith('#'))
    .map((t) => relative(root, resolve(root, dirname(file), decodeURIComponent(t.split('#')[0]!))));
  return new Set(linked);
}

describe('documentation links', () => {
  it('the checker reports a missing file, a missing heading and a fragment on a non-Markdown file', () => {
    const root = mkdtempSync(join(tmpdir(), 'qwex-docs-'));
    try {
      mkdirSync(join(root, 'docs', 'backends'), { recursive: true });
      writeFileSync(join(root, 'notes.txt'), 'x\n');
      writeFileSync(
        join(root, 'README.md'),
        '# Top\n\n[ok](docs/backends/a.md#the-qwex-run-options) [gone](docs/missing.md) [bad](docs/backends/a.md#nowhere)\n' +
          '[txt](notes.txt#x) [self](#top) [web](https://example.com/x.md) `[code](docs/not-a-link.md)`\n\n```\n[fenced](docs/not-a-link.md)\n```\n',
      );
      writeFileSync(join(root, 'docs', 'backends', 'a.md'), '# A\n\n## The `qwex run` options\n\n[up](../../README.md#top) [sibling](b.md)\n');
      expect(brokenLinks(root, markdownFiles(root))).toEqual([
        'README.md: docs/missing.md (no such file)',
        'README.md: docs/backends/a.md#nowhere (no heading with that anchor in docs/backends/a.md)',
        'README.md: notes.txt#x (a #fragment on something that is not a Markdown file)',
        'docs/backends/a.md: b.md (no such file)',
      ]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('every relative link in README.md and docs/ points at an existing file and heading', () => {
    const files = markdownFiles(ROOT);
    expect(files).toContain('docs/configuration.md');
    expect(brokenLinks(ROOT, files)).toEqual([]);
  });

  it('the README links every docs page, and every page links back to it', () => {
    const pages = markdownFiles(ROOT).filter((f) => f !== 'README.md');
    const fromReadme = linkedFiles(ROOT, 'README.md');
    expect(pages.filter((p) => !fromReadme.has(p))).toEqual([]);
    // protocol.md and the design notes predate this layout and are kept as they are.
    const userPages = pages.filter((p) => p !== 'docs/protocol.md' && !p.startsWith('docs/design/'));
    expect(userPages.filter((p) => !linkedFiles(ROOT, p).has('README.md'))).toEqual([]);
  });
});

describe('README.md', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');

  it(`stays a first page: under ${README_MAX_LINES} lines`, () => {
    expect(readme.split('\n').length).toBeLessThan(README_MAX_LINES);
  });

  it('shows the set-up command and the test command', () => {
    expect(readme).toContain(SETUP_COMMAND);
    expect(readme).toContain('npm test');
  });

  it('names the Configuration page that config errors point to', () => {
    expect(readme).toContain('[Configuration](docs/configuration.md)');
  });
});
