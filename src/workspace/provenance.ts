import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Provenance } from '../run/model.js';

/** True when git could find a repository for `dir`: a .git (directory or file) in it or above, or GIT_DIR set. */
function mayBeInGitRepo(dir: string): boolean {
  if (process.env.GIT_DIR) return true;
  for (let at = resolve(dir); ; at = dirname(at)) {
    if (existsSync(join(at, '.git'))) return true;
    if (dirname(at) === at) return false;
  }
}

/** The git state of a project (commit, branch, dirty), or undefined when it is not a git work tree or git is missing. */
export function gitProvenance(project: string): Provenance['git'] | undefined {
  // No repository around: no git process to learn it (a few milliseconds of every `qwex run -d`).
  if (!mayBeInGitRepo(project)) return undefined;
  const git = (...args: string[]): string | undefined => {
    try {
      return execFileSync('git', ['-C', project, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim();
    } catch {
      return undefined; // git missing, not a work tree, or no commit yet: no provenance, never a failed submission
    }
  };
  const commit = git('rev-parse', '--verify', 'HEAD');
  if (commit === undefined) return undefined;
  const branch = git('symbolic-ref', '--short', '-q', 'HEAD');
  // qwex's own directory is not the project's code.
  const status = git('status', '--porcelain', '--untracked-files=normal', '--', '.', ':(exclude).qwex');
  return { commit, branch: branch || null, dirty: status === undefined ? true : status !== '' };
}
