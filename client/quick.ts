/**
 * `qwex ps` and `qwex status`, the commands scripts and loops run most, in
 * their plain forms, without loading the command-line parser (commander is
 * about a third of a `qwex ps`). Each form taken here is one that the full
 * parser (main.ts) takes the same way, with the same options object; any
 * other argument (help, a typo, an unusual spelling) goes to the full parser,
 * which explains it.
 */
type Quick = { command: 'ps'; options: { all?: true; last: string; status?: string; json?: true } } | { command: 'status'; prefix: string; options: { json?: true } };

/** The command and its options when `args` (after `qwex`) is a plain ps or status; undefined otherwise. */
export function parseQuick(args: readonly string[]): Quick | undefined {
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
