import { CloudClient } from '../../src/cloud/client.js';
import { normaliseServerUrl, saveLogin } from '../../src/cloud/credentials.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import type { Context } from '../context.js';

interface LoginOptions {
  token?: string;
  json?: boolean;
}

/** The most a token read from stdin may be: a token is about 50 characters; anything near this is not one. */
const MAX_STDIN = 64 * 1024;

/**
 * `qwex login URL`: reads a qwexcloud token (from --token, from stdin when
 * it is not a terminal, else from a prompt that does not echo), checks it
 * with the server (GET /v1/me), and only then stores it 0600 under the
 * config directory. The token is never printed, not even in errors.
 */
export default async function login(_ctx: Context, urlText: string, options: LoginOptions): Promise<number> {
  const url = normaliseServerUrl(urlText);
  const token = options.token ?? (process.stdin.isTTY ? await promptHidden(`token for ${url}: `) : await readStdin());
  if (token === undefined) {
    process.stderr.write('\nlogin cancelled\n');
    return 130;
  }
  const trimmed = token.trim();
  if (trimmed === '') throw new QwexError(ErrorCode.Usage, 'no token given', { hint: 'paste the token qwexcloud token create printed, or pass --token TOKEN' });
  if (/\s/.test(trimmed)) throw new QwexError(ErrorCode.Usage, 'a token has no spaces or line breaks', { hint: 'give the token alone, as qwexcloud token create printed it' });
  let me;
  try {
    me = await new CloudClient({ url, token: trimmed }).me();
  } catch (error) {
    if (error instanceof QwexError && error.code === ErrorCode.Unauthorized) {
      throw new QwexError(ErrorCode.Unauthorized, `${url} refused the token: nothing was stored`, { hint: 'check it was copied whole and is not revoked (qwexcloud token list)' });
    }
    throw error;
  }
  saveLogin({ url, token: trimmed, user: me.user, savedAt: new Date().toISOString() });
  if (options.json) process.stdout.write(`${JSON.stringify({ url, user: me.user, admin: me.admin }, null, 2)}\n`);
  else process.stderr.write(`logged in to ${url} as ${me.user}${me.admin ? ' (admin)' : ''}\n`);
  return 0;
}

/** The first line of stdin (`echo $TOKEN | qwex login URL`, a secret manager's pipe). */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > MAX_STDIN) throw new QwexError(ErrorCode.Usage, 'stdin holds far more than a token', { hint: 'pipe in the token alone' });
  }
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/).find((line) => line.trim() !== '') ?? '';
}

/**
 * Asks on stderr and reads a line from the terminal without echoing it
 * (raw mode; backspace and Ctrl-U edit). Undefined on Ctrl-C. Written
 * here rather than taken from a package: it is the whole of what is needed.
 */
function promptHidden(question: string): Promise<string | undefined> {
  const input = process.stdin;
  // Echo goes off before the question appears: what is typed in answer is never shown.
  input.setRawMode(true);
  input.setEncoding('utf8');
  input.resume();
  process.stderr.write(question);
  return new Promise((resolve) => {
    let value = '';
    const finish = (result: string | undefined): void => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      if (result !== undefined) process.stderr.write('\n');
      resolve(result);
    };
    const onData = (text: string): void => {
      for (const ch of text) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return finish(value);
        if (ch === '\u0003') return finish(undefined);
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else if (ch === '\u0015') value = '';
        else if (ch >= ' ') value += ch;
      }
    };
    input.on('data', onData);
  });
}
