import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { installPath } from './install-paths.js';

/**
 * Renders the user-service definitions that start qwexd at login, from the
 * templates in systemd/ and launchd/, with this installation's real paths.
 */
export interface ServiceSpec {
  /** Absolute path of the node binary. */
  node: string;
  /** Absolute path of dist/daemon/qwexd.js. */
  qwexd: string;
  /** Variables qwexd must see to agree with the CLI (QWEX_STATE_DIR, QWEX_RUNTIME_DIR). */
  env: Record<string, string>;
  /** launchd only: where qwexd's stderr goes. */
  stderrPath: string;
}

export const SYSTEMD_UNIT_NAME = 'qwexd.service';
export const LAUNCHD_LABEL = 'dev.qwex.qwexd';

/** The variables copied into the service so that qwexd uses the same directories as this shell. */
export const SERVICE_ENV_NAMES = ['QWEX_STATE_DIR', 'QWEX_RUNTIME_DIR', 'XDG_STATE_HOME'];

export function serviceEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of SERVICE_ENV_NAMES) if (env[name]) out[name] = env[name]!;
  return out;
}

function template(rel: string): string {
  return readFileSync(installPath(rel), 'utf8');
}

/**
 * systemd quoting: double quotes with C escapes, '%' doubled so it is not a
 * specifier, and in command lines (not in Environment=, which expands no
 * variables) '$' doubled so it is not a variable.
 */
export function systemdQuote(value: string, options: { commandLine: boolean }): string {
  let escaped = value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/%/g, '%%');
  if (options.commandLine) escaped = escaped.replace(/\$/g, '$$$$');
  return `"${escaped}"`;
}

export function renderSystemdUnit(spec: ServiceSpec): string {
  const execStart = [spec.node, spec.qwexd, '--foreground'].map((arg) => systemdQuote(arg, { commandLine: true })).join(' ');
  const environment = Object.entries(spec.env)
    .map(([name, value]) => `Environment=${systemdQuote(`${name}=${value}`, { commandLine: false })}\n`)
    .join('');
  return template('systemd/qwexd.service.in').replace('@EXEC_START@', () => execStart).replace('@ENVIRONMENT@', () => environment);
}

export function xmlEscape(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

export function renderLaunchdPlist(spec: ServiceSpec): string {
  const args = [spec.node, spec.qwexd, '--foreground'].map((a) => `    <string>${xmlEscape(a)}</string>`).join('\n');
  const entries = Object.entries(spec.env);
  const environment = entries.length === 0
    ? ''
    : `  <key>EnvironmentVariables</key>\n  <dict>\n${entries.map(([k, v]) => `    <key>${xmlEscape(k)}</key>\n    <string>${xmlEscape(v)}</string>\n`).join('')}  </dict>\n`;
  return template('launchd/dev.qwex.qwexd.plist.in')
    .replace('@PROGRAM_ARGUMENTS@', () => args)
    .replace('@ENVIRONMENT@', () => environment)
    .replace('@STDERR_PATH@', () => xmlEscape(spec.stderrPath));
}

export function systemdUnitPath(env: NodeJS.ProcessEnv = process.env): string {
  const config = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(config, 'systemd', 'user', SYSTEMD_UNIT_NAME);
}

export function launchdPlistPath(): string {
  return join(homedir(), 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`);
}
