import { chmodSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { writeJsonAtomic } from '../fs-atomic.js';

/**
 * The tokens of the qwexcloud servers this user logged in to (`qwex
 * login`), in one file under the config directory, readable by the user
 * alone (0600 in a 0700 directory). A token is read from here by whoever
 * talks to the server (the CLI, a run's monitor) and never copied into a
 * run's record, a log or a message: run.json names the server's URL only.
 */
export interface Login {
  /** The server's base URL, normalised (see normaliseServerUrl). */
  url: string;
  token: string;
  /** Who the server said the token is, when it was stored. */
  user: string;
  savedAt: string;
}

interface CredentialsFile {
  version: 1;
  /** The server runs go to when the project names none: the last one logged in to. */
  current?: string;
  servers: Record<string, { token: string; user: string; savedAt: string }>;
}

export const CREDENTIALS_FILE = 'credentials.json';

/** qwex's config directory: $XDG_CONFIG_HOME/qwex, else ~/.config/qwex. */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME ? resolve(env.XDG_CONFIG_HOME) : join(homedir(), '.config');
  return join(base, 'qwex');
}

export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(configDir(env), CREDENTIALS_FILE);
}

/**
 * A server URL as it is stored and compared: http or https, no credentials,
 * query or fragment, no trailing slash (a path prefix behind a proxy stays).
 */
export function normaliseServerUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw new QwexError(ErrorCode.Usage, `"${text}" is not a URL`, { hint: 'give the server\'s address, e.g. https://qwex.example.com or http://127.0.0.1:8470' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new QwexError(ErrorCode.Usage, `"${text}" is not an http or https URL`, { hint: 'e.g. https://qwex.example.com' });
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new QwexError(ErrorCode.Usage, 'a server URL has no user, password, query or fragment', { hint: 'the token is given apart: qwex login URL (it prompts for it)' });
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

function read(env: NodeJS.ProcessEnv): CredentialsFile {
  const path = credentialsPath(env);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return { version: 1, servers: {} };
    throw new QwexError(ErrorCode.ConfigInvalid, `cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    const parsed = JSON.parse(text) as CredentialsFile;
    if (parsed.version !== 1 || typeof parsed.servers !== 'object' || parsed.servers === null) throw new Error('unknown shape');
    return parsed;
  } catch {
    // Never quote the file: it holds tokens.
    throw new QwexError(ErrorCode.ConfigInvalid, `${path} is not a credentials file qwex can read`, { hint: `remove it and run qwex login again` });
  }
}

function write(file: CredentialsFile, env: NodeJS.ProcessEnv): void {
  const dir = configDir(env);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeJsonAtomic(join(dir, CREDENTIALS_FILE), file);
    // An older file made by hand may have been wider: the rename kept the new file's 0600, and this makes sure.
    chmodSync(join(dir, CREDENTIALS_FILE), 0o600);
  } catch (error) {
    throw new QwexError(ErrorCode.StateUnwritable, `cannot write ${join(dir, CREDENTIALS_FILE)}: ${(error as Error).message}`, {
      hint: 'check that the config directory ($XDG_CONFIG_HOME/qwex or ~/.config/qwex) is writable',
    });
  }
}

/** The login for `url` (or the current one when no URL is given); undefined when there is none. */
export function findLogin(url?: string, env: NodeJS.ProcessEnv = process.env): Login | undefined {
  const file = read(env);
  const key = url === undefined ? file.current : normaliseServerUrl(url);
  const entry = key === undefined ? undefined : file.servers[key];
  return entry && key !== undefined ? { url: key, ...entry } : undefined;
}

/** The login for `url` (or the current one), or QWEX_UNAUTHORIZED saying how to log in. */
export function requireLogin(url?: string, env: NodeJS.ProcessEnv = process.env): Login {
  const login = findLogin(url, env);
  if (login) return login;
  throw new QwexError(ErrorCode.Unauthorized, url === undefined ? 'not logged in to a qwexcloud server' : `not logged in to ${normaliseServerUrl(url)}`, {
    hint: `run: qwex login ${url === undefined ? 'URL' : normaliseServerUrl(url)}`,
  });
}

/** Stores a login (replacing one for the same URL) and makes it the current one. */
export function saveLogin(login: Login, env: NodeJS.ProcessEnv = process.env): void {
  const file = read(env);
  file.servers[login.url] = { token: login.token, user: login.user, savedAt: login.savedAt };
  file.current = login.url;
  write(file, env);
}

/** Forgets the login for `url` (or the current one). Returns what was removed, if anything. */
export function removeLogin(url?: string, env: NodeJS.ProcessEnv = process.env): Login | undefined {
  const file = read(env);
  const key = url === undefined ? file.current : normaliseServerUrl(url);
  const entry = key === undefined ? undefined : file.servers[key];
  if (!entry || key === undefined) return undefined;
  delete file.servers[key];
  if (file.current === key) {
    const next = Object.keys(file.servers)[0];
    if (next === undefined) delete file.current;
    else file.current = next;
  }
  write(file, env);
  return { url: key, ...entry };
}
