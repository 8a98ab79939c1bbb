#!/usr/bin/env node
/**
 * qwexcloud: the qwex team server. This file only parses the command line
 * and maps errors to exit codes; each command is loaded when it is asked for.
 *
 *   qwexcloud serve [--listen HOST:PORT] [--data DIR] [--db URL] [--target BACKEND|NAME=BACKEND ...] [--config FILE] [--tls-cert F --tls-key F]
 *   qwexcloud migrate [--data DIR] [--db URL] [--config FILE]
 *   qwexcloud token create --user NAME [--admin] | token list [--json] | token revoke ID|USER
 *   qwexcloud clusters [--json]
 *   qwexcloud openapi
 */
import { Command, Option } from 'commander';
import { ErrorCode, toQwexError } from '../src/errors.js';
import { VERSION } from '../src/version.js';
import { DEFAULT_LISTEN } from './config.js';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Where the configuration comes from; every command takes these. */
function common(command: Command): Command {
  return command
    .option('--config <file>', 'a YAML configuration file (flags win over it)')
    .option('--data <dir>', 'the data directory: database (SQLite), runs, logs, content store (default $QWEXCLOUD_DATA or /var/lib/qwexcloud)')
    .option('--db <url>', 'sqlite:PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (default $QWEXCLOUD_DB or sqlite:DATA/qwexcloud.db)');
}

/** Exit codes of qwexcloud: 0 ok, 2 bad usage or configuration, 1 anything else. */
function exitCodeFor(code: string): number {
  return code === ErrorCode.Usage || code === ErrorCode.ConfigInvalid ? 2 : 1;
}

async function main(argv: string[]): Promise<number> {
  let result: Promise<number> = Promise.resolve(0);
  const program = new Command('qwexcloud')
    .description('the qwex team server')
    .version(VERSION, '-V, --version')
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });

  common(program.command('serve').description('serve the API until SIGTERM'))
    .option('--listen <host:port>', `where to listen (default ${DEFAULT_LISTEN})`)
    .option('--target <backend>', 'a target (local, docker, k8s, kueue, or NAME=BACKEND); repeatable; replaces the config file\'s', collect)
    .option('--concurrency <n>', 'local and docker runs at once (default: the number of CPUs)')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM)')
    .option('--tls-key <file>', 'and this private key (PEM)')
    .action(async (options) => {
      const { serve } = await import('./commands/serve.js');
      result = serve(options);
    });

  common(program.command('migrate').description('bring the database to this version\'s schema')).action(async (options) => {
    const { migrate } = await import('./commands/migrate.js');
    result = migrate(options);
  });

  program.command('openapi').description('print the OpenAPI document of this version\'s API (docs/cloud-api.json is this)').action(async () => {
    const { openApiDocument } = await import('./main.js');
    result = openApiDocument().then((doc) => {
      process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
      return 0;
    });
  });

  common(program.command('clusters').description('each cluster: health (reason, since when), Kueue\'s queues, pending and running runs; removed ones kept in the history'))
    .option('--json', 'as JSON')
    .action(async (options) => {
      const { clustersCommand } = await import('./clusters-command.js');
      result = clustersCommand(options);
    });

  const token = program.command('token').description('create, list and revoke API tokens');
  common(token.command('create').description('create a token (and the user, if new); prints the token alone on stdout, once'))
    .requiredOption('--user <name>', 'whose token it is')
    .addOption(new Option('--admin', 'the user is an admin: sees and acts on every run'))
    .action(async (options) => {
      const { tokenCreate } = await import('./commands/token.js');
      result = tokenCreate(options);
    });
  common(token.command('list').description('every token: id, user, created, last used, revoked'))
    .option('--json', 'as JSON')
    .action(async (options) => {
      const { tokenList } = await import('./commands/token.js');
      result = tokenList(options);
    });
  common(token.command('revoke').description('revoke one token (by id) or every token of a user (by name)'))
    .argument('<id-or-user>')
    .action(async (idOrUser: string, options) => {
      const { tokenRevoke } = await import('./commands/token.js');
      result = tokenRevoke({ ...options, idOrUser });
    });

  try {
    await program.parseAsync(argv);
    return await result;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') return 0;
    if (typeof code === 'string' && code.startsWith('commander.')) return 2;
    const qe = toQwexError(error);
    process.stderr.write(`qwexcloud: ${qe.message}\n`);
    if (qe.hint) process.stderr.write(`hint: ${qe.hint}\n`);
    return exitCodeFor(qe.code);
  }
}

process.exitCode = await main(process.argv);
