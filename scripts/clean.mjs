// Empties dist/ before a build: output of files that were moved or removed
// (and esbuild's chunks of earlier builds) would otherwise stay, be imported
// by mistake, and end up in the packed tarball.
import { rmSync } from 'node:fs';

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
