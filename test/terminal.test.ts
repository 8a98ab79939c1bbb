import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI, sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

/** Runs the CLI under a real pseudo-terminal (util-linux `script`), as a person would see it. */
async function onTerminal(args: string, env: Record<string, string> = {}): Promise<string | undefined> {
  const have = await execa('sh', ['-c', 'command -v script'], { reject: false });
  if (have.exitCode !== 0) return undefined;
  const r = await execa('script', ['-qec', `${process.execPath} ${CLI} ${args}`, '/dev/null'], {
    cwd: sb.project,
    env: { ...process.env, ...sb.env, NO_COLOR: '', TERM: 'xterm', ...env },
    reject: false,
  });
  return r.stdout;
}

describe('on a terminal', () => {
  it('shows symbols and colours, and neither colours with NO_COLOR; pipes get plain words', async (ctx) => {
    const tty = await onTerminal('run -- sh -c "echo hello"');
    if (tty === undefined) {
      const reason = 'util-linux `script` is not installed, so no pseudo-terminal can be had';
      if (process.env.QWEX_REQUIRE_PTY === '1') throw new Error(`QWEX_REQUIRE_PTY=1 but ${reason}`);
      console.log(`skipped: ${reason}`);
      ctx.skip();
    }
    expect(tty).toContain('hello');
    expect(tty).toMatch(/⚙.*run .*started \(local\)/);
    expect(tty).toMatch(/✔.*succeeded/);
    expect(tty).toContain('\u001b[');

    const plain = await onTerminal('run -- sh -c "exit 3"', { NO_COLOR: '1' });
    expect(plain).toMatch(/✖ {2}run \S+ failed \(exit 3\)/);
    expect(plain).not.toContain('\u001b[');

    const piped = await execa(process.execPath, [CLI, 'run', '--', 'true'], { cwd: sb.project, env: { ...process.env, ...sb.env }, reject: false });
    expect(piped.stderr).toMatch(/^run \S+ started \(local\)\nrun \S+ succeeded/);
    expect(piped.stderr).not.toMatch(/[⚙✔]/);
  });
});
