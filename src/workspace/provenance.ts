import { execFileSync } from 'node:child_process';
import type { Provenance } from '../run/model.js';

/** The git state of a project (commit, branch, dirty), or undefined when it is not a git work tree or git is missing. */
export function gitProvenance(project: string): Provenance['git'] | undefined {
  const git = (...args: string[]): string | undefined => {
    try {
      return execFileSync('git', ['-C', project, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim();
    } catch {
      return undefined;
    }
  };
  const commit = git('rev-parse', '--verify', 'HEAD');
  if (commit === undefined) return undefined;
  const branch = git('symbolic-ref', '--short', '-q', 'HEAD');
  // qwex's own directory is not the project's code.
  const status = git('status', '--porcelain', '--untracked-files=normal', '--', '.', ':(exclude).qwex');
  return { commit, branch: branch || null, dirty: status === undefined ? true : status !== '' };
}
