import type { RunOptions } from './commands/run.js';

/**
 * `qwex ps`, `qwex status` and `qwex run`, the commands scripts and loops run
 * most, in their plain forms, without loading the command-line parser
 * (commander is about a third of a `qwex ps`). Each form taken here is one
 * that the full parser (main.ts) takes the same way, with the same options
 * object; any other argument (help, a typo, an unusual spelling) goes to the
 * full parser, which explains it.
 */
type Quick =
  | { command: 'ps'; options: { all?: true; last: string; status?: string; json?: true } }
  | { command: 'status'; prefix: string; options: { json?: true } }
  | { command: 'run'; args: string[]; options: QuickRunOptions };

/** `qwex run`'s options as parsed here: all but the defaults of backends' own flags (quick-run.ts adds them). */
type QuickRunOptions = RunOptions & { set: string[]; grid: string[]; env: string[]; notify: string[]; mount: string[]; color: true };

/**
 * The options of `qwex run` taken here, by spelling: a flag, a value, or a
 * repeatable value (commander's `collect`). The backends' own flags (--host,
 * --context...), --pull (its values are checked), --no-color, --help and
 * every combined or `=` spelling go to the full parser.
 */
const RUN_OPTIONS: Record<string, { key: keyof QuickRunOptions; kind: 'flag' | 'value' | 'list' }> = {
  '-d': { key: 'detach', kind: 'flag' },
  '--detach': { key: 'detach', kind: 'flag' },
  '-q': { key: 'quiet', kind: 'flag' },
  '--quiet': { key: 'quiet', kind: 'flag' },
  '--json': { key: 'json', kind: 'flag' },
  '--shell': { key: 'shell', kind: 'flag' },
  '--snapshot': { key: 'snapshot', kind: 'flag' },
  '--in-place': { key: 'inPlace', kind: 'flag' },
  '-j': { key: 'job', kind: 'value' },
  '--job': { key: 'job', kind: 'value' },
  '-b': { key: 'backend', kind: 'value' },
  '--backend': { key: 'backend', kind: 'value' },
  '-w': { key: 'watch', kind: 'value' },
  '--watch': { key: 'watch', kind: 'value' },
  '--name': { key: 'name', kind: 'value' },
  '--timeout': { key: 'timeout', kind: 'value' },
  '--grace': { key: 'grace', kind: 'value' },
  '--after': { key: 'after', kind: 'value' },
  '--after-any': { key: 'afterAny', kind: 'value' },
  '--image': { key: 'image', kind: 'value' },
  '--cpus': { key: 'cpus', kind: 'value' },
  '--memory': { key: 'memory', kind: 'value' },
  '--gpus': { key: 'gpus', kind: 'value' },
  '--network': { key: 'network', kind: 'value' },
  '--user': { key: 'user', kind: 'value' },
  '-e': { key: 'env', kind: 'list' },
  '--env': { key: 'env', kind: 'list' },
  '--set': { key: 'set', kind: 'list' },
  '--grid': { key: 'grid', kind: 'list' },
  '--notify': { key: 'notify', kind: 'list' },
  '--mount': { key: 'mount', kind: 'list' },
};

/**
 * `qwex run`'s options up to its command: the command's own arguments, from
 * the first that is not an option (or after `--`), are passed through as
 * they are, as the full parser does (passThroughOptions).
 */
function parseRun(args: readonly string[]): Quick | undefined {
  // Commander's defaults: [] for each repeatable option, true for --no-color.
  const options: QuickRunOptions = { set: [], grid: [], env: [], notify: [], mount: [], color: true };
  const values = options as unknown as Record<string, unknown>;
  for (let i = 1; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') return { command: 'run', args: args.slice(i + 1), options };
    if (!arg.startsWith('-')) return { command: 'run', args: args.slice(i), options };
    const option = Object.hasOwn(RUN_OPTIONS, arg) ? RUN_OPTIONS[arg] : undefined;
    if (option === undefined) return undefined;
    if (option.kind === 'flag') {
      values[option.key] = true;
      continue;
    }
    const value = args[++i];
    // A value that looks like an option is left to the full parser (it takes it as the value).
    if (value === undefined || value.startsWith('-')) return undefined;
    values[option.key] = option.kind === 'list' ? [...(values[option.key] as string[]), value] : value;
  }
  return { command: 'run', args: [], options };
}

/** The command and its options when `args` (after `qwex`) is a plain ps, status or run; undefined otherwise. */
export function parseQuick(args: readonly string[]): Quick | undefined {
  if (args[0] === 'run') return parseRun(args);
  if (args[0] === 'ps') {
    const options: { all?: true; last: string; status?: string; json?: true } = { last: '20' };
    for (let i = 1; i < args.length; i++) {
      const arg = args[i]!;
      if (arg === '-a' || arg === '--all') options.all = true;
      else if (arg === '--json') options.json = true;
      else if (arg === '-n' || arg === '--last' || arg === '--status') {
        const value = args[++i];
        // A value that looks like an option is left to the full parser (it takes it as the value, and says why that fails).
        if (value === undefined || value.startsWith('-')) return undefined;
        if (arg === '--status') options.status = value;
        else options.last = value;
      } else return undefined;
    }
    return { command: 'ps', options };
  }
  if (args[0] === 'status') {
    let prefix: string | undefined;
    const options: { json?: true } = {};
    for (const arg of args.slice(1)) {
      if (arg === '--json') options.json = true;
      else if (!arg.startsWith('-') && prefix === undefined) prefix = arg;
      else return undefined;
    }
    return prefix === undefined ? undefined : { command: 'status', prefix, options };
  }
  return undefined;
}

/** Runs a quick command as main.ts would (the same module, context and error rendering); returns its exit code. */
export async function runQuick(quick: Quick, argv: readonly string[]): Promise<number> {
  if (quick.command === 'run') return (await import('./quick-run.js')).runCommand(quick.args, quick.options, argv);
  const [{ Context }, { reportError }] = await Promise.all([import('./context.js'), import('./exit.js')]);
  const ctx = new Context();
  try {
    if (quick.command === 'ps') return await (await import('./commands/ps.js')).default(ctx, quick.options);
    return await (await import('./commands/status.js')).default(ctx, quick.prefix, quick.options);
  } catch (error) {
    return reportError(error, { json: argv.includes('--json') });
  } finally {
    await ctx.close();
  }
}
