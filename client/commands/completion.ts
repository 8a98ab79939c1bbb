import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Argument, Command, Option } from 'commander';
import { BACKENDS } from '../../src/backends/registry.js';
import type { BackendFlag } from '../../src/backends/types.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { findProjectRoot, indexPath, LOCAL_CONFIG_FILE, PROJECT_CONFIG_FILE, QWEX_DIR } from '../../src/paths.js';
import { RUN_STATUSES } from '../../src/run/model.js';
import type { Context } from '../context.js';

/**
 * Shell completion. `qwex completion SHELL` prints a script; each Tab then
 * runs `qwex __complete -- WORD...` once (one Node process), which answers
 * from the command-line definition itself (commands, flags, choices), the
 * backend registry (descriptors only: no backend is loaded), qwex.yaml (job
 * and workflow names, read leniently so that a file being edited still
 * completes) and the run index (run ids, newest first).
 *
 * The answer: a first line saying what to complete (`:values`, or `:files` /
 * `:dirs` for the shell's own file-name completion), then one candidate a
 * line, each with an optional tab and description.
 */
export const SHELLS = ['bash', 'zsh', 'fish'] as const;
type Shell = (typeof SHELLS)[number];

/** How many run ids are offered at most (newest first). */
const MAX_RUN_IDS = 50;

export default async function completion(_ctx: Context, shell: string): Promise<number> {
  if (!(SHELLS as readonly string[]).includes(shell)) {
    throw new QwexError(ErrorCode.Usage, `no completion for the shell "${shell}"`, { hint: `qwex completion ${SHELLS.join('|')}` });
  }
  process.stdout.write(SCRIPTS[shell as Shell]);
  return 0;
}

/** `qwex __complete -- WORD...`: the words after `qwex`, the last being the one under the cursor (maybe empty). */
export async function complete(_ctx: Context, words: string[], _options: unknown, command: Command): Promise<number> {
  let answer: Answer;
  try {
    answer = await completeWords(command.parent!, words);
  } catch {
    // A Tab never shows an error: it offers nothing.
    answer = { kind: 'values', values: [] };
  }
  const lines = answer.kind === 'values' ? [':values', ...answer.values.map(([value, description]) => (description ? `${value}\t${oneLine(description)}` : value))] : [`:${answer.kind}`];
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

type Candidate = [value: string, description?: string];
type Answer = { kind: 'values'; values: Candidate[] } | { kind: 'files' } | { kind: 'dirs' };

/** The candidates for the last word, given the words before it. */
export async function completeWords(program: Command, words: string[]): Promise<Answer> {
  const before = words.slice(0, -1);
  const cur = words.at(-1) ?? '';
  let command = program;
  let positional = 0;
  let afterDashes = false;
  // The option whose value the next word is (`--backend docker`), if any.
  let pending: Option | undefined;
  for (const word of before) {
    if (pending) {
      // bash without bash-completion splits `--backend=docker` into `--backend`, `=`, `docker`.
      if (word !== '=') pending = undefined;
      continue;
    }
    if (afterDashes || word === '-' || !word.startsWith('-')) {
      const sub = positional === 0 && !afterDashes ? findCommand(command, word) : undefined;
      if (sub) {
        command = sub;
        continue;
      }
      positional++;
      if (takesCommandLine(command)) return { kind: 'files' };
      continue;
    }
    if (word === '--') {
      afterDashes = true;
      continue;
    }
    const option = findOption(command, word.includes('=') ? word.slice(0, word.indexOf('=')) : word);
    if (option && takesValue(option) && !word.includes('=')) pending = option;
  }
  if (pending) return valuesFor(pending, cur, '');
  if (!afterDashes && cur.startsWith('--') && cur.includes('=')) {
    const option = findOption(command, cur.slice(0, cur.indexOf('=')));
    if (option && takesValue(option)) return valuesFor(option, cur.slice(cur.indexOf('=') + 1), cur.slice(0, cur.indexOf('=') + 1));
    return { kind: 'values', values: [] };
  }
  if (!afterDashes && cur.startsWith('-')) return filtered(optionsOf(command), cur);
  if (!afterDashes && positional === 0 && command.commands.length > 0) {
    return filtered(visibleCommands(command).map((c) => [c.name(), c.description()]), cur);
  }
  return argumentValues(command, positional, cur);
}

function visibleCommands(command: Command): Command[] {
  return command.createHelp().visibleCommands(command).filter((c) => !c.name().startsWith('__'));
}

function findCommand(command: Command, name: string): Command | undefined {
  return command.commands.find((c) => c.name() === name || c.aliases().includes(name));
}

function findOption(command: Command, flag: string): Option | undefined {
  return command.options.find((o) => o.long === flag || o.short === flag);
}

function takesValue(option: Option): boolean {
  return option.required || option.optional;
}

/** `run` and `batch`: after the first word of the command line, every word is the command's own. */
function takesCommandLine(command: Command): boolean {
  const first = command.registeredArguments[0];
  return first?.name() === 'command' && first.variadic;
}

function optionsOf(command: Command): Candidate[] {
  const options = command.createHelp().visibleOptions(command);
  return options.flatMap((o) => (o.long ? [[o.long, o.description] as Candidate] : []));
}

function filtered(candidates: Candidate[], prefix: string): Answer {
  return { kind: 'values', values: candidates.filter(([value]) => value.startsWith(prefix)) };
}

/** The value of an option; `keep` is what comes before it in the word (`--backend=`). Lists (`--status a,b`) complete their last item. */
async function valuesFor(option: Option, cur: string, keep: string): Promise<Answer> {
  const name = option.attributeName();
  const list = name === 'status' || name === 'after' || name === 'afterAny';
  const done = list ? cur.slice(0, cur.lastIndexOf(',') + 1) : '';
  const item = cur.slice(done.length);
  let candidates: Candidate[];
  if (option.argChoices) candidates = option.argChoices.map((c) => [c]);
  else if (name === 'backend') candidates = BACKENDS.map((b) => [b.name, b.summary]);
  else if (name === 'job') candidates = (await configNames('jobs')).map((n) => [n, 'job']);
  else if (name === 'status') candidates = RUN_STATUSES.map((s) => [s]);
  else if (name === 'after' || name === 'afterAny') candidates = await runIds(item);
  else if (backendFlag(name)?.values) candidates = (await backendFlag(name)!.values!(project())).map((v) => [v, backendFlag(name)!.description]);
  else if (name === 'watch' || name === 'copyTo') return { kind: 'dirs' };
  else if (name === 'mount') return { kind: 'files' };
  else candidates = [];
  return { kind: 'values', values: candidates.filter(([v]) => v.startsWith(item)).map(([v, d]) => [`${keep}${done}${v}`, d] as Candidate) };
}

/** A positional argument, by the name it is declared with. */
async function argumentValues(command: Command, index: number, cur: string): Promise<Answer> {
  const args = command.registeredArguments;
  const argument: Argument | undefined = args[index] ?? (args.at(-1)?.variadic ? args.at(-1) : undefined);
  switch (argument?.name()) {
    case 'run':
    case 'runs':
    case 'other':
      return { kind: 'values', values: await runIds(cur) };
    case 'workflow':
      return filtered(workflowIds(), cur);
    case 'name':
      return filtered((await configNames('workflows')).map((n) => [n, 'workflow']), cur);
    case 'shell':
      return filtered(SHELLS.map((s) => [s]), cur);
    case 'projects':
      return { kind: 'dirs' };
    case 'command':
    case 'file':
      return { kind: 'files' };
    default:
      return { kind: 'values', values: [] };
  }
}

function project(): string {
  return findProjectRoot(process.cwd());
}

/**
 * The names under `jobs:` or `workflows:` of qwex.yaml and .qwex/config.yaml,
 * parsed as plain YAML without the schema: a file with a mistake elsewhere
 * (being edited) still completes its names; one that is not YAML gives none.
 */
async function configNames(key: 'jobs' | 'workflows'): Promise<string[]> {
  const names = new Set<string>();
  for (const rel of [PROJECT_CONFIG_FILE, LOCAL_CONFIG_FILE]) {
    const section = ((await readYaml(join(project(), rel))) as Record<string, unknown> | undefined)?.[key];
    if (section && typeof section === 'object' && !Array.isArray(section)) for (const name of Object.keys(section)) names.add(name);
  }
  return [...names].sort();
}

/** A YAML file's value; undefined when it is missing or not YAML. The parser is loaded only when there is a file to read. */
async function readYaml(path: string): Promise<unknown> {
  if (!existsSync(path)) return undefined;
  try {
    // yaml is CommonJS: once bundled, its functions are on the default export.
    const yaml = await import('yaml');
    const { parse } = (yaml as unknown as { default?: typeof yaml }).default ?? yaml;
    const value: unknown = parse(readFileSync(path, 'utf8'));
    return value && typeof value === 'object' ? value : undefined;
  } catch {
    return undefined;
  }
}

/** This project's runs, newest first, with their status and command; none when there is no index yet (it is never created here). */
async function runIds(prefix: string): Promise<Candidate[]> {
  const path = indexPath();
  if (!existsSync(path)) return [];
  const { RunIndex } = await import('../../src/store/run-index.js');
  const index = RunIndex.open(path);
  try {
    // UUIDv7 ids sort by time: the index's own order is the age order.
    const rows = index.list({ project: project(), limit: 1000 }).reverse();
    return rows
      .filter((r) => r.id.startsWith(prefix))
      .slice(0, MAX_RUN_IDS)
      .map((r) => [r.id, `${r.status} · ${r.command}`] as Candidate);
  } finally {
    index.close();
  }
}

/** This project's workflow ids, newest first (their directory names; UUIDv7 sort by time). */
function workflowIds(): Candidate[] {
  try {
    return readdirSync(join(project(), QWEX_DIR, 'workflows'))
      .filter((name) => /^[0-9a-f-]{8,}$/.test(name))
      .sort()
      .reverse()
      .map((id) => [id, 'workflow']);
  } catch {
    return []; // no workflows yet (or none readable): a Tab offers nothing, never an error
  }
}

/** A backend's own flag (`--host`, `--context`), whose descriptor may offer its values. */
function backendFlag(key: string): BackendFlag | undefined {
  return BACKENDS.flatMap((b) => b.flags).find((f) => f.key === key);
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length <= 70 ? flat : `${flat.slice(0, 69)}…`;
}

const SCRIPTS: Record<Shell, string> = {
  bash: `# qwex completion for bash.
#   this shell:  source <(qwex completion bash)
#   for good:    qwex completion bash > ~/.local/share/bash-completion/completions/qwex
# Each Tab runs \`qwex __complete\` once.
_qwex_complete() {
  local cur words cword
  if declare -F _comp_get_words >/dev/null 2>&1; then
    _comp_get_words -n =: cur words cword
  elif declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
    _get_comp_words_by_ref -n =: cur words cword
  else
    words=("\${COMP_WORDS[@]}") cword=$COMP_CWORD cur=\${COMP_WORDS[COMP_CWORD]}
  fi
  local IFS=$'\\n' line prefix=
  local -a out
  out=($("\${words[0]}" __complete -- "\${words[@]:1:cword}" 2>/dev/null)) || return 0
  COMPREPLY=()
  case \${out[0]} in
    :files) compopt -o default 2>/dev/null; return 0 ;;
    :dirs) compopt -o dirnames 2>/dev/null; return 0 ;;
  esac
  # bash replaces only what follows the last = or : of the word (COMP_WORDBREAKS).
  if [[ $cur == *[=:]* && $COMP_WORDBREAKS == *[=:]* ]]; then prefix=\${cur%"\${cur##*[=:]}"}; fi
  for line in "\${out[@]:1}"; do
    line=\${line%%$'\\t'*}
    COMPREPLY+=("\${line#"$prefix"}")
  done
  compopt -o nosort 2>/dev/null
  return 0
}
complete -F _qwex_complete qwex
`,
  zsh: `#compdef qwex
# qwex completion for zsh.
#   this shell:  source <(qwex completion zsh)     (after compinit)
#   for good:    qwex completion zsh > "\${fpath[1]}/_qwex"
# Each Tab runs \`qwex __complete\` once.
_qwex() {
  local -a out values shown
  local line value description
  out=("\${(@f)$(\${words[1]} __complete -- "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  case \${out[1]} in
    :files) _files; return ;;
    :dirs) _files -/; return ;;
  esac
  for line in "\${(@)out[2,-1]}"; do
    [[ -z $line ]] && continue
    value=\${line%%$'\\t'*}
    description=
    [[ $line == *$'\\t'* ]] && description=\${line#*$'\\t'}
    values+=("$value")
    shown+=("$value\${description:+  -- $description}")
  done
  (( \${#values} )) && compadd -V qwex -l -d shown -a values
}
if [[ \${zsh_eval_context[-1]} == loadautofunc ]]; then
  _qwex "$@"
else
  compdef _qwex qwex
fi
`,
  fish: `# qwex completion for fish.
#   this shell:  qwex completion fish | source
#   for good:    qwex completion fish > ~/.config/fish/completions/qwex.fish
# Each Tab runs \`qwex __complete\` once.
function __qwex_complete
    set -l tokens (commandline -opc)
    set -l out ($tokens[1] __complete -- $tokens[2..-1] (commandline -ct) 2>/dev/null)
    or return
    switch "$out[1]"
        case :files
            __fish_complete_path (commandline -ct)
        case :dirs
            __fish_complete_directories (commandline -ct)
        case '*'
            printf '%s\\n' $out[2..-1]
    end
end
complete -c qwex -k -f -a '(__qwex_complete)'
`,
};
