import { readFileSync } from 'node:fs';
import { installPath } from './install-paths.js';

/** qwex's version, from its package.json. */
export const VERSION: string = readVersion();

function readVersion(): string {
  try {
    return (JSON.parse(readFileSync(installPath('package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0-unknown';
  }
}
