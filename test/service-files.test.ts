import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { renderLaunchdPlist, renderSystemdUnit, systemdQuote } from '../src/service-files.js';
import { qwex, ROOT, sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

const awkward = {
  node: '/opt/node 22/bin/node',
  qwexd: '/home/a "b"/100%/$HOME/qwex/dist/daemon/qwexd.js',
  env: { QWEX_STATE_DIR: '/state with space/%h/$x' },
  stderrPath: '/tmp/a&b<c>.log',
};

async function have(command: string): Promise<boolean> {
  return (await execa('sh', ['-c', `command -v ${command}`], { reject: false })).exitCode === 0;
}

describe('systemd user unit', () => {
  it('quotes paths with spaces, quotes, % and $ so systemd reads them back as they are', () => {
    expect(systemdQuote('/a b/"c"/100%/$x', { commandLine: true })).toBe('"/a b/\\"c\\"/100%%/$$x"');
    expect(systemdQuote('A=%h $x', { commandLine: false })).toBe('"A=%%h $x"');
    const unit = renderSystemdUnit(awkward);
    expect(unit).toContain('ExecStart="/opt/node 22/bin/node" "/home/a \\"b\\"/100%%/$$HOME/qwex/dist/daemon/qwexd.js" "--foreground"');
    expect(unit).toContain('Environment="QWEX_STATE_DIR=/state with space/%%h/$x"');
    expect(unit).toMatch(/^Type=simple$/m);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^KillMode=process$/m);
    expect(unit).toMatch(/^WantedBy=default.target$/m);
  });

  it('qwex daemon install --no-enable writes a unit for this installation that systemd-analyze accepts', async (ctx) => {
    const config = join(sb.project, '..', 'config');
    const result = await qwex(sb, ['daemon', 'install', '--no-enable', '--platform', 'linux', '--json'], { env: { XDG_CONFIG_HOME: config } });
    expect(result.exitCode).toBe(0);
    const { path } = JSON.parse(String(result.stdout)) as { path: string };
    expect(path).toBe(join(config, 'systemd', 'user', 'qwexd.service'));
    const unit = readFileSync(path, 'utf8');
    expect(unit).toContain(`ExecStart="${process.execPath}" "${join(ROOT, 'dist', 'daemon', 'qwexd.js')}" "--foreground"`);
    expect(unit).toContain(`Environment="QWEX_STATE_DIR=${sb.state}"`);
    if (!(await have('systemd-analyze'))) {
      if (process.env.QWEX_REQUIRE_SYSTEMD === '1') throw new Error('QWEX_REQUIRE_SYSTEMD=1 but systemd-analyze is not installed');
      console.log('skipped the systemd-analyze check: systemd-analyze is not installed');
      ctx.skip();
    }
    const verify = await execa('systemd-analyze', ['verify', path], { reject: false });
    expect(verify.stderr).not.toMatch(/qwexd\.service/);
    expect(verify.exitCode).toBe(0);
    const un = await qwex(sb, ['daemon', 'uninstall', '--no-enable', '--platform', 'linux', '--json'], { env: { XDG_CONFIG_HOME: config } });
    expect(JSON.parse(String(un.stdout))).toMatchObject({ installed: false, removed: true, path });
  });
});

describe('launchd agent', () => {
  it('escapes XML and parses as a property list with the same entry point', async (ctx) => {
    const plist = renderLaunchdPlist(awkward);
    expect(plist).toContain('<string>/tmp/a&amp;b&lt;c&gt;.log</string>');
    if (!(await have('python3'))) {
      console.log('skipped the plist parse: python3 is not installed');
      ctx.skip();
    }
    const parsed = await execa('python3', ['-c', 'import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))'], { input: plist });
    expect(JSON.parse(parsed.stdout)).toEqual({
      Label: 'dev.qwex.qwexd',
      ProgramArguments: [awkward.node, awkward.qwexd, '--foreground'],
      EnvironmentVariables: awkward.env,
      RunAtLoad: true,
      KeepAlive: { SuccessfulExit: false },
      AbandonProcessGroup: true,
      StandardErrorPath: awkward.stderrPath,
    });
  });

  it('qwex daemon install --platform darwin --no-enable writes the agent under ~/Library/LaunchAgents', async () => {
    const home = join(sb.project, '..', 'home');
    const r = await qwex(sb, ['daemon', 'install', '--no-enable', '--platform', 'darwin', '--json'], { env: { HOME: home } });
    expect(r.exitCode).toBe(0);
    const { path } = JSON.parse(String(r.stdout)) as { path: string };
    expect(path).toBe(join(home, 'Library', 'LaunchAgents', 'dev.qwex.qwexd.plist'));
    expect(readFileSync(path, 'utf8')).toContain(`<string>${process.execPath}</string>`);
  });

  it('an unsupported platform is a usage error', async () => {
    const r = await qwex(sb, ['daemon', 'install', '--no-enable', '--platform', 'win32']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toContain('no user-service support for platform "win32"');
  });
});
