/**
 * How a command line becomes a process. Several arguments are an argv and
 * run with no shell. A single argument that contains shell syntax (spaces,
 * pipes, redirections, variables, globs...) runs through `/bin/sh -c`, as
 * pueue and task-spooler do; `--shell` forces that for any single string.
 */
const SHELL_SYNTAX = /[\s|&;<>()$`\\"'*?[\]#~{}!]/;

export interface CommandSpec {
  command: string[];
  shell: boolean;
}

export function needsShell(arg: string): boolean {
  return SHELL_SYNTAX.test(arg);
}

export function commandSpec(args: readonly string[], options: { shell?: boolean } = {}): CommandSpec {
  if (options.shell) return { command: [args.join(' ')], shell: true };
  if (args.length === 1 && needsShell(args[0]!)) return { command: [args[0]!], shell: true };
  return { command: [...args], shell: false };
}

/** The program and its arguments as they are executed. */
export function executable(spec: CommandSpec): { file: string; args: string[] } {
  if (spec.shell) return { file: '/bin/sh', args: ['-c', spec.command[0] ?? ''] };
  const [file = '', ...args] = spec.command;
  return { file, args };
}
