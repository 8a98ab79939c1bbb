#!/usr/bin/env node
// The qwex executable. Node's compile cache (Node 22.1 and newer) is turned on
// before anything else is loaded, so later starts skip compiling qwex's code.
// `qwex --version` is answered before the command-line parser is even loaded.
import module from 'node:module';

(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
const argv = process.argv;
if (argv.length === 3 && (argv[2] === '--version' || argv[2] === '-V')) {
  const { VERSION } = await import('../src/version.js');
  process.stdout.write(`${VERSION}\n`);
} else {
  const { run } = await import('./main.js');
  await run(argv);
}
