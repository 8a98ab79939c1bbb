/**
 * For tests that run qwex as the unprivileged user `nobody` (setpriv), as
 * root: permission bits do not stop root, so a permission error must be
 * met as another user. `nobody` must reach what it runs, and a checkout in
 * a private directory (root's 0700 home, a `mktemp -d` folder) is out of
 * its reach: then what running needs is staged in a temporary directory it
 * can reach (hard links where the filesystem allows, copies elsewhere).
 */
import { chmodSync, copyFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { ROOT } from './helpers.js';

/** setpriv's arguments that make the rest of the command line run as nobody, without root's groups. */
export const AS_NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

/** A checkout nobody can run: `root` (this one, or a staged copy), its built CLI, and `cleanup` for a copy. */
export interface NobodyCheckout {
  root: string;
  cli: string;
  staged: boolean;
  cleanup(): void;
}

/** Runs a short Node program as nobody; its exit status and stderr. */
async function asNobody(script: string): Promise<{ ok: boolean; why: string }> {
  const r = await execa('setpriv', [...AS_NOBODY, process.execPath, '-e', script], { reject: false });
  return { ok: r.exitCode === 0, why: String(r.stderr || r.stdout || (r as { shortMessage?: string }).shortMessage || '').trim().split('\n')[0] ?? '' };
}

const readable = (path: string): string => `require('fs').accessSync(${JSON.stringify(path)}, require('fs').constants.R_OK)`;

/** What nobody needs of a checkout to run its built qwex: its package.json (the install root), dist, libexec (the shim) and node_modules. */
const NEEDED = ['package.json', 'dist', 'libexec', 'node_modules'];

/**
 * A checkout of this build that nobody can run, or why there is none
 * (no setpriv; Node itself installed where nobody cannot run it).
 */
export async function checkoutForNobody(): Promise<NobodyCheckout | { reason: string }> {
  const setpriv = await execa('setpriv', ['--version'], { reject: false });
  if (setpriv.exitCode !== 0) return { reason: 'setpriv (util-linux) is not installed' };
  const node = await asNobody('0');
  if (!node.ok) return { reason: `user nobody cannot run ${process.execPath} (${node.why}): install Node where every user can run it` };
  const here = { root: ROOT, cli: join(ROOT, 'dist', 'client', 'cli.js') };
  if ((await asNobody(`${readable(here.cli)}; ${readable(join(ROOT, 'node_modules', 'better-sqlite3', 'package.json'))}`)).ok) {
    return { ...here, staged: false, cleanup: () => {} };
  }
  const root = mkdtempSync(join(tmpdir(), 'qwex-nobody-checkout-'));
  const cleanup = (): void => rmSync(root, { recursive: true, force: true });
  try {
    chmodSync(root, 0o755);
    for (const name of NEEDED) {
      const from = join(ROOT, name);
      if (name === 'package.json') {
        copyFileSync(from, join(root, name));
        continue;
      }
      // Hard links keep the 16,000 files of node_modules cheap; across filesystems, copies.
      const linked = await execa('cp', ['-al', from, join(root, name)], { reject: false });
      if (linked.exitCode !== 0) cpSync(from, join(root, name), { recursive: true, verbatimSymlinks: true });
    }
    const cli = join(root, 'dist', 'client', 'cli.js');
    const check = await asNobody(readable(cli));
    if (!check.ok) {
      cleanup();
      return { reason: `user nobody can reach neither this checkout nor a copy in ${tmpdir()} (${check.why})` };
    }
    return { root, cli, staged: true, cleanup };
  } catch (error) {
    cleanup();
    return { reason: `cannot stage this checkout where user nobody can reach it: ${(error as Error).message}` };
  }
}

/** Skips with the reason printed, or fails under CI (where every test must run). */
export function skipUnlessCi(ctx: { skip(): void }, reason: string): void {
  if (process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI)) throw new Error(`CI is set, and ${reason}`);
  console.log(`skipped: ${reason}`);
  ctx.skip();
}
