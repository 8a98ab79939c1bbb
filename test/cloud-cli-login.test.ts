/**
 * `qwex login` and `qwex logout` as a user runs them, against a real
 * qwexcloud on 127.0.0.1: a token is checked with the server before it is
 * stored, stored 0600 in a 0700 directory under the config directory, read
 * from --token, from stdin, or from a prompt on a real pseudo-terminal that
 * does not echo it, and never printed.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeDatabases, qwexcloud, serverArgs, startCloud, type CloudServer } from './cloud.js';
import { cloudUser, type CloudUser } from './cloud-cli-harness.js';
import { CLI, qwex } from './helpers.js';

let server: CloudServer;
let token: string;
let user: CloudUser;

beforeAll(async () => {
  server = await startCloud({ db: 'sqlite' });
  token = await server.token('ann');
});
afterAll(async () => {
  await server.cleanup();
  await closeDatabases();
});
beforeEach(() => {
  user = cloudUser();
});
afterEach(async () => {
  await user.cleanup();
});

const credentials = (): string => join(user.config, 'qwex', 'credentials.json');

describe('qwex login', () => {
  it('refuses a token the server refuses, stores nothing, and never prints the token', async () => {
    const wrong = `${token.slice(0, -4)}AAAA`;
    const flag = await qwex(user, ['login', server.url, '--token', wrong]);
    expect(flag.exitCode).toBe(20);
    expect(flag.stderr).toMatch(/refused the token: nothing was stored/);
    const piped = await execa(process.execPath, [CLI, 'login', server.url, '--json'], { cwd: user.project, env: user.env, input: `${wrong}\n`, reject: false });
    expect(piped.exitCode).toBe(20);
    expect(JSON.parse(piped.stderr).error.code).toBe('QWEX_UNAUTHORIZED');
    for (const r of [flag, piped]) expect(`${r.stdout}${r.stderr}`).not.toContain(wrong);
    expect(existsSync(credentials())).toBe(false);

    const bad = await qwex(user, ['login', 'ftp://example.com', '--token', token]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/not an http or https URL/);
    const unreachable = await qwex(user, ['login', 'http://127.0.0.1:1', '--token', token]);
    expect(unreachable.exitCode).toBe(26);
    expect(unreachable.stderr).not.toContain(token);
  });

  it('stores a good token read from stdin 0600, checked with the server; logout forgets it', async () => {
    const r = await execa(process.execPath, [CLI, 'login', `${server.url}/`, '--json'], { cwd: user.project, env: user.env, input: `\n${token}\n`, reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ url: server.url, user: 'ann', admin: false });
    expect(`${r.stdout}${r.stderr}`).not.toContain(token);
    expect(statSync(credentials()).mode & 0o777).toBe(0o600);
    expect(statSync(join(user.config, 'qwex')).mode & 0o777).toBe(0o700);
    const stored = JSON.parse(readFileSync(credentials(), 'utf8'));
    expect(stored).toMatchObject({ current: server.url, servers: { [server.url]: { token, user: 'ann' } } });

    // The login is what a cloud run uses: ps --cloud answers (an empty history).
    expect(JSON.parse((await qwex(user, ['ps', '--cloud', '--json'])).stdout)).toEqual([]);

    const out = await qwex(user, ['logout', '--json']);
    expect(JSON.parse(out.stdout)).toEqual({ url: server.url, removed: true });
    expect(readFileSync(credentials(), 'utf8')).not.toContain(token);
    const again = await qwex(user, ['logout']);
    expect(again.exitCode).toBe(0);
    expect(again.stderr).toMatch(/not logged in/);

    // Logged out: a cloud run and ps --cloud say how to log in, and record nothing.
    const run = await qwex(user, ['run', '--backend', 'cloud', '--', 'true']);
    expect(run.exitCode).toBe(20);
    expect(run.stderr).toMatch(/not logged in to a qwexcloud server[\s\S]*qwex login URL/);
    expect(existsSync(join(user.project, '.qwex', 'runs'))).toBe(false);
    expect((await qwex(user, ['ps', '--cloud'])).exitCode).toBe(20);
  });

  it('a revoked token is refused at login', async () => {
    const revocable = await server.token('ann');
    const tokens = JSON.parse(String((await qwexcloud(['token', 'list', '--json', ...serverArgs(server)])).stdout)) as { id: string }[];
    expect((await qwexcloud(['token', 'revoke', tokens.at(-1)!.id, ...serverArgs(server)])).exitCode).toBe(0);
    const r = await qwex(user, ['login', server.url, '--token', revocable]);
    expect(r.exitCode).toBe(20);
    expect(existsSync(credentials())).toBe(false);
  });

  it('on a terminal, prompts for the token without echoing it', async (ctx) => {
    if ((await execa('sh', ['-c', 'command -v script'], { reject: false })).exitCode !== 0) {
      const reason = 'util-linux `script` is not installed, so no pseudo-terminal can be had';
      if (process.env.QWEX_REQUIRE_PTY === '1') throw new Error(`QWEX_REQUIRE_PTY=1 but ${reason}`);
      console.log(`skipped: ${reason}`);
      return ctx.skip();
    }
    // The answer is typed only once the prompt shows, as a person would: the terminal would echo it then, if anything did.
    const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn('script', ['-qec', `${process.execPath} ${CLI} login ${server.url}`, '/dev/null'], { cwd: user.project, env: { ...process.env, ...user.env, TERM: 'xterm' } });
      let output = '';
      let typed = false;
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (!typed && output.includes('token for')) {
          typed = true;
          child.stdin.write(`${token}\r`);
        }
      });
      child.on('close', (code) => resolve({ code, output }));
    });
    expect(result.code, result.output).toBe(0);
    expect(result.output).toContain(`token for ${server.url}: `);
    expect(result.output).toContain('logged in to');
    expect(result.output).not.toContain(token);
    expect(JSON.parse(readFileSync(credentials(), 'utf8')).servers[server.url].token).toBe(token);
  });
});
