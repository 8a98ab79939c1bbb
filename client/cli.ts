#!/usr/bin/env node
// The qwex executable. Node's compile cache (Node 22.1 and newer) is turned on
// before anything else is loaded, so later starts skip compiling qwex's code.
import module from 'node:module';

(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
const { run } = await import('./main.js');
await run(process.argv);
