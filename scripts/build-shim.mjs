// Compiles libexec/qwex-shim.c into libexec/qwex-shim, the parent process of
// every local run. Where no C compiler is found, qwex uses the Perl twin
// (libexec/qwex-shim.pl) instead: so a missing compiler is said and is not an
// error. With --optional (the postinstall script) a failed compilation is not
// one either, so installing qwex never fails over it; `npm run build` fails.
// CI=true turns warnings into errors.
import { spawnSync } from 'node:child_process';
import { renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'libexec', 'qwex-shim.c');
const output = join(root, 'libexec', 'qwex-shim');
const optional = process.argv.includes('--optional');
const ci = process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI);

// $CC may carry words of its own ("ccache gcc").
const [cc, ...ccArgs] = (process.env.CC?.trim() || 'cc').split(/\s+/);
const flags = ['-O2', '-Wall', '-Wextra', ...(ci ? ['-Werror'] : [])];
// Built beside the output and renamed over it: a running shim's binary is never half-written.
const temporary = `${output}.${process.pid}.tmp`;

const result = spawnSync(cc, [...ccArgs, ...flags, '-o', temporary, source], { stdio: ['ignore', 'inherit', 'inherit'] });
if (result.error) {
  rmSync(temporary, { force: true });
  const why = result.error.code === 'ENOENT' ? `no C compiler (${cc}) found` : `cannot run ${cc}: ${result.error.message}`;
  console.log(`qwex: ${why}; local runs will use libexec/qwex-shim.pl (perl) as their parent process. Set CC to a compiler to build libexec/qwex-shim.`);
  process.exit(0);
}
if (result.status !== 0) {
  rmSync(temporary, { force: true });
  // A binary left from an older source would not keep the contract this checkout's qwex expects.
  rmSync(output, { force: true });
  console.error(`qwex: ${cc} could not compile libexec/qwex-shim.c (${result.signal ?? `exit ${result.status}`}); local runs will use libexec/qwex-shim.pl.`);
  process.exit(optional ? 0 : 1);
}
renameSync(temporary, output);
