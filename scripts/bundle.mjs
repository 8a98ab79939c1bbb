// Bundles the entry points (qwex, qwexd, the per-run monitor, qwexcloud) with
// esbuild, over tsc's output, so that each starts by loading a few files
// instead of about forty modules (measured: `qwex ps` 110 -> 90 ms on the
// development machine). Commands stay lazily loaded (code splitting). The
// rest of dist/ (the SDK under dist/src) stays as tsc wrote it.
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

await build({ ...common, entryPoints: ['client/cli.ts'], outdir: 'dist/client' });
await build({ ...common, entryPoints: ['daemon/qwexd.ts', 'daemon/monitor.ts'], outdir: 'dist/daemon' });
// The server starts once and runs for weeks: its dependencies (Fastify, Kysely, pg...) load from node_modules as
// they are, which keeps their optional parts (pino's transports, pg-native) working.
await build({ ...common, entryPoints: ['server/qwexcloud.ts'], outdir: 'dist/server', packages: 'external' });
