// Bundles the entry points (qwex, qwexd, the per-run monitor, qwexcloud) with
// esbuild, over tsc's output, so that each starts by loading a few files
// instead of about forty modules (measured: `qwex ps` 110 -> 90 ms on the
// development machine). Commands stay lazily loaded (code splitting). The
// rest of dist/ (the SDK under dist/src) stays as tsc wrote it. The
// dashboard's front end (web/) is bundled for browsers into dist/web/, with
// everything it uses (Preact, xterm.js, uPlot) inside: it loads nothing from
// anywhere else.
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  splitting: true,
  // A native addon cannot be bundled; dockerode (and the ssh2 it brings) load optional native parts with require();
  // the Kubernetes client is large and loaded only by the k8s backend.
  external: ['better-sqlite3', 'dockerode', 'ssh2', '@kubernetes/client-node'],
  // Bundled CommonJS dependencies call require(); give them one in ESM.
  banner: { js: "import { createRequire as __qwexCreateRequire } from 'node:module'; const require = __qwexCreateRequire(import.meta.url);" },
  sourcemap: true,
  logLevel: 'warning',
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
};

// Chunk names carry a content hash: the previous build's are removed rather than left to pile up.
for (const dir of ['dist/client/chunks', 'dist/daemon/chunks', 'dist/server/chunks']) rmSync(dir, { recursive: true, force: true });

await build({ ...common, entryPoints: ['client/cli.ts'], outdir: 'dist/client' });
// qwexd checks its protocol with zod/mini, of which a bundle takes only what it uses. Classic zod (qwex.yaml's schemas,
// read on some requests) would share a chunk with it and bring all of zod (650 KB) into every qwexd, idle or not: it
// loads from node_modules instead, when a request first reads a config file.
const classicZodOutside = {
  name: 'classic-zod-outside',
  setup: (b) => b.onResolve({ filter: /^zod$/ }, () => ({ path: 'zod', external: true })),
};
// Minified but for names (stack traces in qwexd's log keep them; the source maps give lines): V8 keeps every loaded
// script's source in the heap, and qwexd runs for weeks. Idle qwexd: 1.2 MB less RSS.
await build({
  ...common,
  entryPoints: ['daemon/qwexd.ts', 'daemon/monitor.ts'],
  outdir: 'dist/daemon',
  plugins: [classicZodOutside],
  minifyWhitespace: true,
  minifySyntax: true,
});
// The server starts once and runs for weeks: its dependencies (Fastify, Kysely, pg...) load from node_modules as
// they are, which keeps their optional parts (pino's transports, pg-native) working.
// `qwex ui`'s server (ui.js) shares the route handlers with qwexcloud.
await build({ ...common, entryPoints: { qwexcloud: 'server/qwexcloud.ts', ui: 'server/ui.ts' }, outdir: 'dist/server', packages: 'external' });

rmSync('dist/web', { recursive: true, force: true });
await build({
  entryPoints: { app: 'web/src/main.tsx' },
  outdir: 'dist/web/assets',
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: ['chrome111', 'firefox113', 'safari16.4'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'warning',
});
mkdirSync('dist/web', { recursive: true });
copyFileSync('web/index.html', 'dist/web/index.html');
