#!/usr/bin/env node
// The qwex executable. Node's compile cache (Node 22.1 and newer) is turned on
// before anything else is loaded, so later starts skip compiling qwex's code.
// `qwex --version` is answered before the command-line parser is even loaded,
// and so are the plain forms of `qwex ps`, `qwex status` and `qwex run` (quick.ts).
import module from 'node:module';
import { parseQuick, runQuick } from './quick.js';

(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
const argv = process.argv;
const quick = parseQuick(argv.slice(2));
if (argv.length === 3 && (argv[2] === '--version' || argv[2] === '-V')) {
  const { VERSION } = await import('../src/version.js');
  process.stdout.write(`${VERSION}\n`);
} else if (quick) {
  const { exit } = await import('./exit.js');
  await exit(await runQuick(quick, argv));
} else {
  const { run } = await import('./main.js');
  await run(argv);
}
