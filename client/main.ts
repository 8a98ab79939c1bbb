/**
 * The `qwex` command line. This file only declares commands and parses;
 * each command's module, and the context it works with (store, index,
 * runner), is loaded when that command runs: `qwex --version` loads
 * nothing else, and `qwex ps` never loads a backend.
 */
import { Command, Option } from 'commander';
import { BACKENDS } from '../src/backends/registry.js';
import { VERSION } from '../src/version.js';
import type { Context } from './context.js';
import { exit, reportError } from './exit.js';
import { disableColour } from './style.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/**
 * Flags of the container backends and each backend's own (from its
 * descriptor), shared by `run` and `submit`; they override backends.<name>
 * in the config.
 */
function containerOptions(command: Command): Command {
  command
    .option('--image <name>', 'container image (container backends)')
    .addOption(new Option('--pull <policy>', 'when to pull the image').choices(['never', 'missing', 'always']))
    .option('--cpus <n>', 'CPU limit, e.g. 2 or 0.5')
    .option('--memory <size>', 'memory limit, e.g. 512m or 4g')
    .option('--gpus <request>', 'GPUs: a count, all, or device=0,1 (local: handed out by qwexd; containers: device requests)')
    .option('--mount <src:dst[:ro]>', 'bind-mount a host path into the container (repeatable)', collect, [])
    .option('--network <name>', 'container network (bridge, host, none, or a named network)')
    .option('--user <user>', 'run as this uid[:gid] or user in the container (default: yours)');
  const seen = new Set<string>();
  for (const flag of BACKENDS.flatMap((b) => b.flags)) {
    if (seen.has(flag.flags)) continue;
    seen.add(flag.flags);
    command.option(flag.flags, flag.description);
  }
  return command;
}

const EXAMPLES = `
Examples:
  qwex init                                  write a qwex.yaml with the backends found here
  qwex run python train.py                   run in the foreground; output streams, exit code passes through
  qwex run -d -- python train.py --lr 0.1    detach: prints the run id, the run goes on
  qwex ps                                    this project's runs (qwex ps --all: every project)
  qwex logs -f 019a                          follow a run's output (a unique id prefix is enough)
  qwex attach 019a                           replay and stream a run; Ctrl-C detaches
  qwex run -b docker --image python:3.12 -- python train.py
  qwex batch python train.py                 the same run on the configured remote backend (ssh, k8s...)
  qwex run -j train --grid lr=0.1,0.01       a named job of qwex.yaml, swept
  qwex cancel 019a                           SIGTERM, then SIGKILL after the grace period
  source <(qwex completion bash)             Tab completion (zsh, fish: see docs/shell-completion.md)
`;

type CommandModule<A extends unknown[]> = { default: (ctx: Context, ...args: A) => Promise<number> };

/** Makes a command's action from the loader of its module: what the action is called with is what the module gets. */
export type ActionFor = <A extends unknown[]>(load: () => Promise<CommandModule<A>>) => (...args: A) => Promise<void>;

/**
 * Every command and option of `qwex`, with `use` making each action. The
 * quick path's tests (test/unit/quick-commands.test.ts) parse with it, to
 * check that the forms taken without it give the same options.
 */
export function buildProgram(use: ActionFor): Command {
  const program = new Command('qwex')
    .description('Run a command here or elsewhere, walk away, and keep its record, logs and artifacts.')
    .version(VERSION, '-V, --version')
    .enablePositionalOptions()
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({
      // Errors are rendered by reportError (with a code and a hint); help and usage text pass through.
      writeErr: (text) => {
        if (!text.startsWith('error:')) process.stderr.write(text);
      },
    });

  /** `run` and `batch` take the same options: `batch` is `run` on the configured remote backend. */
  const runOptions = (command: Command): Command =>
    containerOptions(
      command
        .argument('[command...]', 'the program and its arguments; one quoted string with shell syntax runs through /bin/sh -c (with -j: arguments added to the job\'s command)')
        .option('-d, --detach', 'print the run id and return at once; the run goes on')
        .option('-j, --job <name>', 'run a named job of qwex.yaml (`qwex jobs` lists them)')
        .option('--set <name=value>', 'a parameter of the named job (repeatable)', collect, [])
        .option('--grid <name=v1,v2>', 'sweep a parameter: one run per value, the cross product of every --grid (repeatable)', collect, [])
        .option('--after <runs>', 'start once these runs (comma-separated) succeeded; cancelled if one does not')
        .option('--after-any <runs>', 'start once these runs ended, however they ended')
        .option('-b, --backend <name>', `where to run (overrides the config): ${BACKENDS.map((b) => b.name).join(', ')}`)
        .option('-w, --watch <dirs>', 'comma-separated directories to capture artifacts from (default: out)')
        .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable; KEY alone copies it from here)', collect, [])
        .option('--shell', 'run the command line through /bin/sh -c')
        .option('--name <name>', 'a label shown by qwex ps')
        .option('--timeout <duration>', 'stop the run after this long (e.g. 90s, 30m, 2h)')
        .option('--grace <duration>', 'time between SIGTERM and SIGKILL when stopping it')
        .option('--snapshot', 'run in a snapshot of the project taken now (the default for --detach)')
        .option('--in-place', 'run in the project directory itself (the default in the foreground)')
        .option('--notify <target>', 'also tell this target when the run ends: a name from notify.targets, an http(s) URL, or mailto:ADDRESS (repeatable)', collect, [])
        .option('-q, --quiet', 'print only the program\'s own output')
        .option('--json', 'with --detach: print the run record as JSON'),
    ).passThroughOptions();

  runOptions(program.command('run').description('run a command; streams its output and exits with its exit code (or returns at once with --detach)')).action(
    use(() => import('./commands/run.js')),
  );
  runOptions(
    program
      .command('batch')
      .description('run a command on another machine and stream its output back: `qwex run` on the configured remote backend (see docs/commands.md)'),
  ).action(use(() => import('./commands/batch.js')));

  const submitCommand = program
    .command('submit')
    .description('submit many jobs in one request (one shell command or NDJSON job spec per line); prints the run ids in order')
    .argument('<file>', 'the jobs, or - for stdin')
    .option('-b, --backend <name>', 'backend for jobs that name none')
    .option('-w, --watch <dirs>', 'artifact directories for jobs that name none')
    .option('-e, --env <KEY=VALUE>', 'set a variable for every job (repeatable)', collect, [])
    .option('--timeout <duration>', 'stop each run after this long')
    .option('--grace <duration>', 'time between SIGTERM and SIGKILL when stopping one')
    .option('--snapshot', 'run each job in a snapshot of the project taken now (the default)')
    .option('--in-place', 'run each job in the project directory itself')
    .option('--json', 'print the run records as a JSON array');
  containerOptions(submitCommand).action(use(() => import('./commands/submit.js')));

  program
    .command('ps')
    .description('list this project\'s runs, newest last')
    .option('-a, --all', 'runs of every project')
    .addOption(new Option('-n, --last <count>', 'show the newest COUNT runs (0: all)').default('20'))
    .option('--status <list>', 'only runs with these statuses (comma-separated)')
    .option('--job <name>', 'only runs of this named job')
    .option('--cloud', 'your runs\' history on the qwexcloud server you logged in to (newest last)')
    .option('--server <url>', 'with --cloud: another server you logged in to')
    .option('--json', 'print a JSON array')
    .action(use(() => import('./commands/ps.js')));

  program
    .command('jobs')
    .description('list the named jobs of qwex.yaml, with their versions and parameters')
    .option('--json', 'print a JSON array')
    .action(use(() => import('./commands/jobs.js')));

  program
    .command('rerun')
    .description('run a past run again exactly: its snapshot, command, environment, backend and options')
    .argument('<run>', 'run id or unique prefix')
    .option('--in-place', 'with today\'s code instead of the run\'s snapshot (`qwex diff` then shows what changed)')
    .option('-d, --detach', 'print the new run\'s id and return at once')
    .option('-q, --quiet', 'print only the program\'s own output')
    .option('--json', 'with --detach: print the run record as JSON')
    .action(use(() => import('./commands/rerun.js')));

  const workflow = program.command('workflow').description('run and manage workflows: the stages of qwex.yaml, each a run on its own backend');
  workflow
    .command('run')
    .description('run the top-level stages (or the workflow NAME): streams each stage\'s output; exits 0 when every stage succeeded, else with the first failed stage\'s exit code')
    .argument('[name]', 'a workflow under workflows: in qwex.yaml')
    .option('-d, --detach', 'print the workflow id and return at once')
    .option('-q, --quiet', 'print only the stages\' own output')
    .option('--json', 'print the workflow as JSON (with --detach: at once; else when it ends)')
    .action(use(async () => ({ default: (await import('./commands/workflow.js')).run })));
  workflow
    .command('ps')
    .description('list this project\'s workflows, newest last')
    .option('-a, --all', 'workflows of every project')
    .addOption(new Option('-n, --last <count>', 'the newest COUNT workflows (0: all)').default('20'))
    .option('--json', 'print a JSON array')
    .action(use(async () => ({ default: (await import('./commands/workflow.js')).ps })));
  workflow
    .command('status')
    .description('show a workflow and its stages')
    .argument('<workflow>', 'workflow id or unique prefix')
    .option('--json', 'print { id, status, exitCode, stages: [{ name, runId, status, exitCode, ... }], ... }')
    .action(use(async () => ({ default: (await import('./commands/workflow.js')).status })));
  workflow
    .command('cancel')
    .description('cancel a workflow: stages not started never start, running ones are stopped')
    .argument('<workflow>', 'workflow id or unique prefix')
    .option('--no-wait', 'return once the request is made')
    .option('--json', 'print the workflow as JSON')
    .action(use(async () => ({ default: (await import('./commands/workflow.js')).cancel })));
  workflow
    .command('retry')
    .description('resume a failed or cancelled workflow from the stages that did not succeed, reusing the others\' runs')
    .argument('<workflow>', 'workflow id or unique prefix')
    .option('-d, --detach', 'return at once')
    .option('-q, --quiet', 'print only the stages\' own output')
    .option('--json', 'print the workflow as JSON')
    .action(use(async () => ({ default: (await import('./commands/workflow.js')).retry })));
  workflow
    .command('wait')
    .description('wait until a workflow ends; exits like `workflow run`')
    .argument('<workflow>', 'workflow id or unique prefix')
    .option('--json', 'print the workflow as JSON')
    .action(use(async () => ({ default: (await import('./commands/workflow.js')).wait })));

  program
    .command('logs')
    .description('print a run\'s output (stdout to stdout, stderr to stderr)')
    .argument('<run>', 'run id or unique prefix')
    .option('-f, --follow', 'keep printing until the run ends, then exit with its exit code')
    .option('--stdout', 'only stdout')
    .option('--stderr', 'only stderr')
    .action(use(() => import('./commands/logs.js')));

  program
    .command('attach')
    .description('replay a run\'s output, stream it live, and end with its status and exit code; Ctrl-C detaches')
    .argument('<run>', 'run id or unique prefix')
    .action(use(() => import('./commands/attach.js')));

  program
    .command('status')
    .description('show a run\'s record')
    .argument('<run>', 'run id or unique prefix')
    .option('--json', 'print the whole record as JSON')
    .action(use(() => import('./commands/status.js')));

  program
    .command('wait')
    .description('wait until runs end; exits with the exit code of the first that did not succeed')
    .argument('<runs...>', 'run ids or unique prefixes')
    .option('--json', 'print the final records as a JSON array')
    .action(use(() => import('./commands/wait.js')));

  program
    .command('cancel')
    .description('stop runs: SIGTERM to the process group, SIGKILL after the grace period')
    .argument('<runs...>', 'run ids or unique prefixes')
    .option('--grace <duration>', 'time between SIGTERM and SIGKILL (default: kill_grace_seconds, 10s)')
    .option('--no-wait', 'return once the request is made, without waiting for the run to stop')
    .option('--json', 'print the records as a JSON array')
    .action(use(() => import('./commands/cancel.js')));

  program
    .command('artifacts')
    .description('list the files a run captured')
    .argument('<run>', 'run id or unique prefix')
    .option('--copy-to <dir>', 'also copy them into DIR, keeping their paths')
    .option('--json', 'print artifacts.json')
    .action(use(() => import('./commands/artifacts.js')));

  program
    .command('diff')
    .description('which files of the code differ between two runs, or between a run and the working tree now')
    .argument('<run>', 'run id or unique prefix')
    .argument('[other]', 'another run (default: the working tree)')
    .option('--json', 'print { from, to, added, removed, changed }')
    .action(use(() => import('./commands/diff.js')));

  program
    .command('gc')
    .description('remove workspace-snapshot objects that no run references')
    .option('--json', 'print the report as JSON')
    .action(use(() => import('./commands/gc.js')));

  program
    .command('ui')
    .description('serve the dashboard of your runs on 127.0.0.1; prints its URL, with a one-time token, as the first line')
    .option('-p, --port <port>', 'port to listen on (0: any free one)', '0')
    .option('--no-open', 'do not open a browser')
    .action(use(() => import('./commands/ui.js')));

  program
    .command('doctor')
    .description('check qwex\'s state (the run index, orphaned containers); --reindex rebuilds the index from run directories')
    .argument('[projects...]', 'project roots to reindex (default: this project and every project in the index)')
    .option('--reindex', 'rebuild the index from the run.json files')
    .option('--remove-orphans', 'remove qwex containers and cluster Jobs that no active run accounts for')
    .option('--json', 'print the report as JSON')
    .action(use(() => import('./commands/doctor.js')));

  program
    .command('login')
    .description('store a qwexcloud token for a server (checked with it first); prompts for it without echo')
    .argument('<url>', 'the server, e.g. https://qwex.example.com')
    .option('--token <token>', 'the token (else read from stdin, or a prompt on a terminal; a flag shows in shell history)')
    .option('--json', 'print { url, user, admin }')
    .action(use(() => import('./commands/login.js')));

  program
    .command('logout')
    .description('forget the stored token of a qwexcloud server')
    .argument('[url]', 'the server (default: the one logged in to last)')
    .option('--json', 'print { url, removed }')
    .action(use(() => import('./commands/logout.js')));

  program
    .command('init')
    .description('write a commented qwex.yaml for this project, with the backends found on this machine (Docker engine, SSH hosts, kubeconfig contexts)')
    .option('--force', 'replace an existing qwex.yaml')
    .option('--json', 'print what was found and written as JSON')
    .action(use(() => import('./commands/init.js')));

  program
    .command('completion')
    .description('print the shell completion script for bash, zsh or fish (see docs/shell-completion.md)')
    .argument('<shell>', 'bash, zsh or fish')
    .action(use(() => import('./commands/completion.js')));
  // What the completion scripts call on each Tab; hidden from help.
  program
    .command('__complete', { hidden: true })
    .argument('[words...]')
    .allowUnknownOption()
    .helpOption(false)
    .action(use(async () => ({ default: (await import('./commands/completion.js')).complete })));

  const daemon = program.command('daemon').description('manage qwexd, the optional per-user supervisor');
  daemon
    .command('start')
    .description('start qwexd in the background (no-op if it runs)')
    .option('--concurrency <n>', 'runs at a time (default: number of CPUs)')
    .action(use(async () => ({ default: (await import('./commands/daemon.js')).start })));
  daemon
    .command('stop')
    .description('stop qwexd; its runs go on and are re-adopted at the next start')
    .action(use(async () => ({ default: (await import('./commands/daemon.js')).stop })));
  daemon
    .command('status')
    .description('say whether qwexd runs (exit 0) or not (exit 1), and what it is doing')
    .option('--json', 'print the status as JSON')
    .action(use(async () => ({ default: (await import('./commands/daemon.js')).status })));
  daemon
    .command('logs')
    .description('print qwexd\'s log (JSON lines)')
    .addOption(new Option('-n, --lines <count>', 'the last COUNT lines (0: all)').default('50'))
    .action(use(async () => ({ default: (await import('./commands/daemon.js')).logs })));

  for (const [name, description] of [
    ['install', 'write the systemd user unit (Linux) or launchd agent (macOS) for this installation and enable it'],
    ['uninstall', 'disable and remove the qwexd user service'],
  ] as const) {
    daemon
      .command(name)
      .description(description)
      .option('--no-enable', 'only write (or remove) the file; do not call systemctl or launchctl')
      .addOption(new Option('--platform <name>', 'linux or darwin (default: this one)').hideHelp())
      .option('--json', 'print the result as JSON')
      .action(use(async () => ({ default: (await import('./commands/daemon.js'))[name] })));
  }

  // --no-color: accepted before a command and by every command (not after a run's own command line).
  const withNoColor = (command: Command): void => {
    if (command.name() !== '__complete') command.option('--no-color', 'no colours in the output (also: NO_COLOR=1)');
    for (const sub of command.commands) withNoColor(sub);
  };
  withNoColor(program);
  program.hook('preAction', (_program, action) => {
    if (program.opts().color === false || action.opts().color === false) disableColour();
  });
  program.addHelpText('after', EXAMPLES);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  let ctx: Context | undefined;
  const wantsJson = argv.includes('--json');
  let result = 0;
  const use: ActionFor =
    (load) =>
    async (...args) => {
      const [mod, { Context }] = await Promise.all([load(), import('./context.js')]);
      ctx ??= new Context();
      result = await mod.default(ctx, ...args);
    };
  const program = buildProgram(use);

  try {
    await program.parseAsync(argv);
    return result;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') return 0;
    return reportError(error, { json: wantsJson });
  } finally {
    await ctx?.close();
  }
}

export async function run(argv: string[]): Promise<never> {
  return exit(await main(argv));
}
