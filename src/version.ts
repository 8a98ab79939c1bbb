import { readFileSync } from 'node:fs';
import { installPath } from './install-paths.js';

/** qwex's version, from its package.json. */
export const VERSION: string = readVersion();

function readVersion(): string {
  try {
    return (JSON.parse(readFileSync(installPath('package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // A copy of the code without its package.json (a bundle run from elsewhere): say so rather than fail.
    return '0.0.0-unknown';
  }
}
