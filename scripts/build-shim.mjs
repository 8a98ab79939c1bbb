// Compiles the run helpers in libexec/: qwex-shim.c into qwex-shim, the parent
// process of every local run, and qwex-spawner.c into qwex-spawner, which
// starts shims for qwexd so that qwexd never forks itself. Where no C compiler
// is found, qwex uses the Perl twin of the shim (libexec/qwex-shim.pl) and
// Node's own spawn instead: so a missing compiler is said and is not an
// error. With --optional (the postinstall script) a failed compilation is not
// one either, so installing qwex never fails over it; `npm run build` fails.
// CI=true turns warnings into errors.
import { spawnSync } from 'node:child_process';
import { renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const optional = process.argv.includes('--optional');
const ci = process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI);

// $CC may carry words of its own ("ccache gcc").
const [cc, ...ccArgs] = (process.env.CC?.trim() || 'cc').split(/\s+/);
const flags = ['-O2', '-Wall', '-Wextra', ...(ci ? ['-Werror'] : [])];

const helpers = [
  { name: 'qwex-shim', without: 'local runs will use libexec/qwex-shim.pl (perl) as their parent process' },
  { name: 'qwex-spawner', without: 'qwexd will start each shim with Node’s own spawn (slower with many short runs)' },
];

let failed = false;
for (const { name, without } of helpers) {
  const source = join(root, 'libexec', `${name}.c`);
  const output = join(root, 'libexec', name);
  // Built beside the output and renamed over it: a running helper's binary is never half-written.
  const temporary = `${output}.${process.pid}.tmp`;
  const result = spawnSync(cc, [...ccArgs, ...flags, '-o', temporary, source], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.error) {
    rmSync(temporary, { force: true });
    const why = result.error.code === 'ENOENT' ? `no C compiler (${cc}) found` : `cannot run ${cc}: ${result.error.message}`;
    console.log(`qwex: ${why}; ${helpers.map((h) => h.without).join('; ')}. Set CC to a compiler to build libexec/${helpers.map((h) => h.name).join(' and libexec/')}.`);
    process.exit(0);
  }
  if (result.status !== 0) {
    rmSync(temporary, { force: true });
    // A binary left from an older source would not keep the contract this checkout's qwex expects.
    rmSync(output, { force: true });
    console.error(`qwex: ${cc} could not compile libexec/${name}.c (${result.signal ?? `exit ${result.status}`}); ${without}.`);
    failed = true;
    continue;
  }
  renameSync(temporary, output);
}
if (failed && !optional) process.exit(1);
