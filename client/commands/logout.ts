import { removeLogin } from '../../src/cloud/credentials.js';
import type { Context } from '../context.js';

/**
 * `qwex logout [URL]`: forgets the stored token of a server (the current
 * one by default). The token stays valid on the server until an admin
 * revokes it (qwexcloud token revoke); runs already sent there go on.
 */
export default async function logout(_ctx: Context, url: string | undefined, options: { json?: boolean }): Promise<number> {
  const removed = removeLogin(url);
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ url: removed?.url ?? url ?? null, removed: removed !== undefined }, null, 2)}\n`);
  } else if (removed) {
    process.stderr.write(`logged out of ${removed.url} (the token is still valid there until revoked: qwexcloud token revoke)\n`);
  } else {
    process.stderr.write(url === undefined ? 'not logged in to any server\n' : `not logged in to ${url}\n`);
  }
  return 0;
}
