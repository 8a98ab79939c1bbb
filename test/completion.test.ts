/**
 * Shell completion, in the real shells: bash with bash-completion (and
 * without it), fish (`complete -C`), and zsh (the script's function run by
 * a real zsh, with `compadd` stood in for: drawing a menu needs a
 * terminal). `qwex` is a wrapper on PATH that counts its starts: each Tab
 * starts it once. Missing shells skip with the reason, and fail under
 * QWEX_REQUIRE_SHELLS=1 (CI installs bash-completion, fish and zsh).
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_NAMES } from '../src/backends/registry.js';
import { CLI, FIXTURES, qwex, requireComponent, sandbox, type Sandbox } from './helpers.js';

const BASH_COMPLETION = '/usr/share/bash-completion/bash_completion';

let sb: Sandbox;
let bin: string;
let ids: string[];
const starts = (): number => (existsSync(join(bin, 'starts')) ? readFileSync(join(bin, 'starts'), 'utf8').split('\n').filter(Boolean).length : 0);

beforeAll(async () => {
  sb = sandbox();
  bin = join(sb.project, '..', 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'qwex'), `#!/bin/sh\necho start >> ${join(bin, 'starts')}\nexec ${process.execPath} ${CLI} "$@"\n`);
  chmodSync(join(bin, 'qwex'), 0o755);
  writeFileSync(
    join(sb.project, 'qwex.yaml'),
    ['jobs:', '  train:', '    command: python train.py', '  evaluate:', '    command: python eval.py', 'workflows:', '  nightly:', '    stages:', '      - name: a', '        command: echo a', ''].join('\n'),
  );
  writeFileSync(join(sb.project, 'train.py'), 'print("hi")\n');
  ids = [];
  for (let i = 0; i < 3; i++) {
    const r = await qwex(sb, ['run', '-d', '--', 'true']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    ids.push(String(r.stdout).trim());
  }
});
afterAll(() => sb.cleanup());

function shellEnv(): Record<string, string> {
  return { ...process.env, ...sb.env, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` } as Record<string, string>;
}

async function missing(command: string, what: string): Promise<string | undefined> {
  const r = await execa('sh', ['-c', `command -v ${command}`], { reject: false });
  return r.exitCode === 0 ? undefined : `${what} is not installed`;
}

describe('qwex completion', () => {
  it('prints each shell\'s script; another shell is a usage error naming the three', async () => {
    for (const shell of ['bash', 'zsh', 'fish']) {
      const r = await qwex(sb, ['completion', shell]);
      expect(r.exitCode).toBe(0);
      expect(String(r.stdout)).toContain('__complete');
    }
    const bad = await qwex(sb, ['completion', 'tcsh']);
    expect(bad.exitCode).toBe(2);
    expect(String(bad.stderr)).toMatch(/no completion for the shell "tcsh"[\s\S]*qwex completion bash\|zsh\|fish/);
  });
});

describe('bash', () => {
  /** Runs each Tab (the words, the last being the one under the cursor) and prints COMPREPLY, one Tab a line. */
  async function tabs(lines: string[][], options: { bashCompletion: boolean }): Promise<{ replies: string[]; starts: number; registered: string }> {
    const before = starts();
    const script = [
      options.bashCompletion ? `source ${BASH_COMPLETION}` : '',
      'source <(qwex completion bash)',
      'complete -p qwex',
      // What readline does on Tab: COMP_WORDS split at COMP_WORDBREAKS, then the function.
      't() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _qwex_complete; local IFS=\' \'; echo "${COMPREPLY[*]}"; }',
      ...lines.map((words) => `t ${words.map((w) => `'${w}'`).join(' ')}`),
    ].join('\n');
    const r = await execa('bash', ['--norc', '-c', script], { cwd: sb.project, env: shellEnv() });
    const [registered, ...replies] = String(r.stdout).split('\n');
    return { replies, starts: starts() - before, registered: registered! };
  }

  it('with bash-completion: commands, flags, backends, choices, jobs, workflows and run ids (newest first); one qwex start per Tab', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_SHELLS', existsSync(BASH_COMPLETION) ? await missing('bash', 'bash') : `bash-completion is not installed (${BASH_COMPLETION})`);
    const lines = [
      ['qwex', 'ru'],
      ['qwex', 'run', '--ba'],
      ['qwex', 'run', '--backend', 'd'],
      ['qwex', 'run', '--backend=k'],
      ['qwex', 'run', '--pull', ''],
      ['qwex', 'run', '-j', ''],
      ['qwex', 'ps', '--job', 'ev'],
      ['qwex', 'ps', '--status', 'running,s'],
      ['qwex', 'workflow', 'run', ''],
      ['qwex', 'logs', ''],
      ['qwex', 'wait', ids[0]!, ids[2]!.slice(0, 20)],
      ['qwex', 'daemon', 'st'],
      ['qwex', 'completion', ''],
    ];
    const { replies, starts: count, registered } = await tabs(lines, { bashCompletion: true });
    expect(registered).toBe('complete -F _qwex_complete qwex');
    expect(replies).toEqual([
      'run',
      '--backend',
      'docker',
      'k8s kueue', // after "--backend=": bash replaces what follows the =
      'never missing always',
      'evaluate train',
      'evaluate',
      'running,succeeded',
      'nightly',
      [...ids].reverse().join(' '),
      ids[2],
      'start stop status',
      'bash zsh fish',
    ]);
    // One start to load the script, then one per Tab.
    expect(count).toBe(1 + lines.length);
  });

  it('without bash-completion: the words as readline splits them (--backend = k) still complete', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_SHELLS', await missing('bash', 'bash'));
    const { replies } = await tabs([['qwex', 'run', '--backend', '=', 'k'], ['qwex', 'attach', ids[1]!.slice(0, 30)]], { bashCompletion: false });
    expect(replies).toEqual(['k8s kueue', ids[1]]);
  });
});

describe('fish', () => {
  it('complete -C offers commands, values with their descriptions, run ids newest first, and files for a command line', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_SHELLS', await missing('fish', 'fish'));
    const before = starts();
    const asks = ['qwex ru', 'qwex run --backend ', 'qwex run -j tr', 'qwex status ', 'qwex run python tr'];
    const script = ['qwex completion fish | source', ...asks.map((a) => `complete -C '${a}'; echo ---`)].join('\n');
    const r = await execa('fish', ['--no-config', '-c', script], { cwd: sb.project, env: shellEnv() });
    const answers = `${String(r.stdout)}\n`.split('---\n').map((a) => a.split('\n').filter(Boolean));
    expect(answers[0]).toEqual([expect.stringMatching(/^run\trun a command/)]);
    expect(answers[1]!.map((a) => a.split('\t')[0])).toEqual([...BACKEND_NAMES]);
    expect(answers[1]![1]).toBe('docker\ta container on a Docker engine');
    expect(answers[2]).toEqual(['train\tjob']);
    expect(answers[3]!.map((a) => a.split('\t')[0])).toEqual([...ids].reverse());
    expect(answers[3]![0]).toMatch(/\tsucceeded · true$/);
    expect(answers[4]).toEqual(['train.py']);
    // One start to load the script, then one per Tab (for the fifth, fish lists the files once qwex said so).
    expect(starts() - before).toBe(1 + asks.length);
  });
});

describe('zsh', () => {
  it('the script\'s function, run by zsh, offers the candidates and hands command lines to _files', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_SHELLS', await missing('zsh', 'zsh'));
    const script = [
      // A stand-in for the completion system (compinit's compdef, compadd and _files), which needs a terminal to show a menu on.
      'compdef() { print -r -- "compdef $*" }',
      'compadd() { print -r -- "values: ${values[*]}"; print -r -- "first shown: ${shown[1]}" }',
      '_files() { print -r -- "_files $*" }',
      'source <(qwex completion zsh)',
      'words=(qwex ru); CURRENT=2; _qwex',
      "words=(qwex run --backend ''); CURRENT=4; _qwex",
      'words=(qwex run python tr); CURRENT=4; _qwex',
      'words=(qwex artifacts --copy-to o); CURRENT=4; _qwex',
    ].join('\n');
    const r = await execa('zsh', ['-f', '-c', script], { cwd: sb.project, env: shellEnv() });
    expect(String(r.stdout).split('\n')).toEqual([
      'compdef _qwex qwex',
      'values: run',
      'first shown: run  -- run a command; streams its output and exits with its exit code (or re…',
      `values: ${BACKEND_NAMES.join(' ')}`,
      'first shown: local  -- this machine',
      '_files ',
      '_files -/',
    ]);
  });
});

describe('the hidden command each Tab runs', () => {
  it('never loads a backend, Docker\'s or SSH\'s library or the Kubernetes client, and creates no index where there is none', async () => {
    const log = join(sb.project, '..', 'imports.log');
    rmSync(log, { force: true });
    const state = join(sb.project, '..', 'empty-state');
    for (const words of [['run', '--backend', ''], ['run', '--host', ''], ['run', '--context', ''], ['logs', ''], ['run', '-j', '']]) {
      const r = await execa(process.execPath, ['--import', join(FIXTURES, 'record-imports.mjs'), CLI, '__complete', '--', ...words], {
        cwd: sb.project,
        env: { ...sb.env, QWEX_IMPORT_LOG: log, ...(words[0] === 'logs' ? { QWEX_STATE_DIR: state } : {}) },
      });
      expect(String(r.stdout).split('\n')[0]).toBe(':values');
    }
    const loaded = readFileSync(log, 'utf8').split('\n').filter(Boolean);
    expect(loaded.some((url) => url.includes('/completion'))).toBe(true);
    expect(loaded.filter((url) => /\/chunks\/backend-|\/node_modules\/(dockerode|ssh2|@kubernetes)\//.test(url))).toEqual([]);
    expect(existsSync(state)).toBe(false);
  });

  it('a qwex.yaml with a mistake still completes the names it has; one that is not YAML gives none, and no error', async () => {
    const other = sandbox();
    try {
      writeFileSync(join(other.project, 'qwex.yaml'), 'backend: nowhere\njobs:\n  prep: { command: make }\n');
      expect(String((await qwex(other, ['__complete', '--', 'run', '-j', ''])).stdout)).toBe(':values\nprep\tjob');
      writeFileSync(join(other.project, 'qwex.yaml'), 'jobs: [unclosed\n');
      const r = await qwex(other, ['__complete', '--', 'run', '-j', '']);
      expect(r.exitCode).toBe(0);
      expect(String(r.stdout)).toBe(':values');
      expect(String(r.stderr)).toBe('');
    } finally {
      await other.cleanup();
    }
  });
});
