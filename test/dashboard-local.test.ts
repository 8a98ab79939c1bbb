/**
 * `qwex ui` as a person on a workstation uses it: the built CLI serving the
 * dashboard over the sandbox's real runs (local backend, real processes),
 * driven in a real headless Chromium (test/browser.ts). The URL with its
 * one-time token is the first line on stdout; it works once.
 */
import { createHash } from 'node:crypto';
import { execa, type ResultPromise } from 'execa';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CloudRun, RunUsage } from '../src/cloud/api.js';
import { chromiumUnavailable, freePort, launchBrowser, requireChromium, screenshot, terminalRows } from './browser.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rawRequest } from './cloud.js';
import { CLI, qwex, qwexJson, requireComponent, sandbox, until, type Sandbox } from './helpers.js';
import { clusterUnavailable, startTestCluster, TEST_QUEUE, type TestCluster } from './kube-cluster.js';

/** A progress bar redrawn with `\r` 50 times over some 7 s, then a last line: a terminal shows two lines. */
const PROGRESS = 'for i in $(seq 1 50); do printf "\\rprogress %3d%%" $((i*2)); sleep 0.15; done; printf "\\n\\033[1;32mdone\\033[0m\\n"';
/** Something for the CPU plot to show: a busy shell loop of a few seconds. */
const BUSY = 'i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done; echo counted $i';

describe('qwex ui', () => {
  let sb: Sandbox;
  let ui: ResultPromise;
  let port: number;
  let url: string;
  let base: string;
  let stdout = '';
  let browser: Browser;
  let page: Page;
  let clusterReason: string | undefined;
  let kueue: TestCluster | undefined;

  beforeAll(async () => {
    if (chromiumUnavailable()) return;
    sb = sandbox();
    // A Kueue queue with no quota (the fake Kubernetes API; its pods run on Docker), for a run that waits.
    clusterReason = process.env.QWEX_K8S_KUBECONFIG ? 'the waiting test drives the fake Kubernetes API\'s quota' : await clusterUnavailable();
    if (clusterReason === undefined) {
      kueue = await startTestCluster('kueue', { kueueQuota: 0 });
      Object.assign(sb.env, kueue.env);
      mkdirSync(join(sb.project, '.qwex'), { recursive: true });
      writeFileSync(join(sb.project, '.qwex', 'config.yaml'), `backends:\n${kueue.config}`);
    }
    port = await freePort();
    ui = execa(process.execPath, [CLI, 'ui', '--port', String(port), '--no-open'], { cwd: sb.project, env: sb.env, reject: false, buffer: false });
    ui.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    let stderr = '';
    ui.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    url = await until(() => {
      if (ui.exitCode !== undefined && ui.exitCode !== null) throw new Error(`qwex ui exited ${ui.exitCode}: ${stderr}`);
      return stdout.includes('\n') ? stdout.split('\n')[0]! : undefined;
    }, 30_000, 'qwex ui to print its URL');
    base = `http://127.0.0.1:${port}`;
    browser = await launchBrowser();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    // The one log-in the link allows: every test uses this page.
    await page.goto(url);
    await page.getByRole('heading', { name: 'Runs' }).waitFor();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    if (ui && ui.exitCode === null) {
      ui.kill('SIGTERM');
      await ui;
    }
    await kueue?.close();
    await sb?.cleanup();
  });

  beforeEach((ctx) => requireChromium(ctx));

  it('prints the URL with a one-time token as the first line on stdout; the link logs in once, and no other token does', async () => {
    expect(url).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:${port}/\\?token=[A-Za-z0-9_-]{43}$`));
    // The page logged in with it (beforeAll), and the token left the address bar at once.
    expect(page.url()).toBe(`${base}/`);
    // The same link again in the browser that has the session: it simply goes to the runs.
    await page.goto(url);
    await page.getByRole('heading', { name: 'Runs' }).waitFor();

    // The same link in another browser (a fresh profile): refused, and so is the API there.
    const other = await browser.newContext();
    try {
      const second = await other.newPage();
      const again = await second.goto(url);
      expect(again?.status()).toBe(401);
      await second.getByRole('heading', { name: 'This link does not log in' }).waitFor();
      const wrong = await second.goto(`${base}/?token=${'A'.repeat(43)}`);
      expect(wrong?.status()).toBe(401);
      expect(await second.evaluate(async () => (await fetch('/v1/runs')).status)).toBe(401);
      await second.goto(`${base}/`);
      await second.getByRole('heading', { name: 'Not logged in' }).waitFor();
    } finally {
      await other.close();
    }
    // Another name for this host (DNS rebinding) is refused even with the session.
    expect((await rawRequest(base, { path: '/v1/runs', headers: { host: `evil.example:${port}` } })).status).toBe(403);
  });

  it('shows a run started from the CLI without a reload; its live log draws a \\r progress bar as one updating line', async () => {
    await page.goto(`${base}/`);
    await page.getByRole('heading', { name: 'Runs' }).waitFor();
    await page.evaluate(() => ((window as unknown as { loadedOnce: boolean }).loadedOnce = true));
    const started = await qwex(sb, ['run', '--detach', '--name', 'progress-bar', '--', 'sh', '-c', PROGRESS]);
    expect(started.exitCode).toBe(0);
    const id = String(started.stdout).trim();
    const row = page.locator(`tr[data-run-id="${id}"]`);
    await row.waitFor({ timeout: 20_000 });
    expect(await page.evaluate(() => (window as unknown as { loadedOnce?: boolean }).loadedOnce)).toBe(true);

    await row.getByRole('link', { name: 'progress-bar' }).click();
    await page.getByRole('heading', { name: /progress-bar/ }).waitFor();
    // While it runs, the bar is redrawn in place: at every look it is one row, and a look sees it part-way.
    const looks: string[][] = [];
    await until(async () => {
      const rows = await terminalRows(page);
      looks.push(rows.filter((r) => r.includes('progress')).map((r) => r.trim()));
      return rows.some((r) => r.includes('done')) ? true : undefined;
    }, 40_000, 'the run to end in the terminal');
    expect(looks.every((bars) => bars.length <= 1)).toBe(true);
    expect(looks.some((bars) => bars.length === 1 && /^progress +[0-9]{1,2}%$/.test(bars[0]!))).toBe(true);
    const rows = (await terminalRows(page)).map((r) => r.trimEnd()).filter((r) => r !== '');
    expect(rows.filter((r) => r.includes('progress'))).toEqual(['progress 100%']);
    expect(rows).toEqual(['progress 100%', 'done']);
    await expect.poll(() => page.getByRole('heading', { level: 1 }).locator('.status').textContent(), { timeout: 20_000 }).toBe('succeeded');
  });

  it('plots a run\'s CPU and memory from the samples kept with it', async () => {
    const started = await qwex(sb, ['run', '--detach', '--name', 'busy-loop', '--', 'sh', '-c', BUSY]);
    const id = String(started.stdout).trim();
    await page.goto(`${base}/runs/${id}`);
    await until(async () => ((await qwexJson<{ status: string }>(sb, ['status', id])).status === 'succeeded' ? true : undefined), 60_000, 'the busy loop to end');
    const usage = await page.evaluate(async (runId) => (await (await fetch(`/v1/runs/${runId}/usage`)).json()) as RunUsage, id);
    expect(usage.samples.length).toBeGreaterThan(0);
    expect(usage.samples.every((s) => s.rss > 0 && s.procs >= 1)).toBe(true);
    await page.reload();
    await expect.poll(() => page.locator('.plot canvas').count(), { timeout: 20_000 }).toBeGreaterThanOrEqual(2);
    await expect.poll(() => page.getByRole('img', { name: /^CPU/ }).count()).toBe(1);
    await screenshot(page, 'local-run', { fullPage: true });
  });

  it('cancels a run from its page, and qwex status agrees', async () => {
    const started = await qwex(sb, ['run', '--detach', '--name', 'to-cancel', '--', 'sleep', '300']);
    const id = String(started.stdout).trim();
    await until(async () => ((await qwexJson<{ status: string }>(sb, ['status', id])).status === 'running' ? true : undefined), 30_000, 'the run to start');
    await page.goto(`${base}/runs/${id}`);
    await page.getByRole('button', { name: 'Cancel run' }).click();
    await page.getByRole('dialog', { name: 'Cancel this run?' }).getByRole('button', { name: 'Cancel run' }).click();
    await expect.poll(() => page.getByRole('heading', { level: 1 }).locator('.status').textContent(), { timeout: 30_000 }).toBe('cancelled');
    expect(await qwexJson<{ status: string; endReason: string }>(sb, ['status', id])).toMatchObject({ status: 'cancelled', endReason: 'cancel' });
  });

  it('downloads an artifact with the sha256 artifacts.json records; filters the table by status and text', async () => {
    const started = await qwex(sb, ['run', '--detach', '--name', 'writes-out', '--', 'sh', '-c', 'mkdir -p out/sub && seq 1 3000 > out/sub/n.txt']);
    const id = String(started.stdout).trim();
    await until(async () => ((await qwexJson<{ status: string }>(sb, ['status', id])).status === 'succeeded' ? true : undefined), 30_000, 'the run to end');
    await page.goto(`${base}/runs/${id}`);
    const link = page.getByRole('link', { name: 'Download out/sub/n.txt' });
    await link.waitFor();
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    const { readFileSync } = await import('node:fs');
    const bytes = readFileSync((await download.path())!);
    const expected = Array.from({ length: 3000 }, (_, i) => `${i + 1}\n`).join('');
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(createHash('sha256').update(expected).digest('hex'));
    const listed = await qwexJson<{ files: { path: string; sha256: string }[] }>(sb, ['artifacts', id]);
    expect(listed.files.find((f) => f.path === 'out/sub/n.txt')?.sha256).toBe(createHash('sha256').update(expected).digest('hex'));

    // Filters: the status select and the text box, kept in the address (a filtered view can be bookmarked).
    await page.goto(`${base}/`);
    await page.getByLabel('Status').selectOption('cancelled');
    await expect.poll(async () => page.locator('table.runs tbody tr').count()).toBe(1);
    expect(await page.locator('table.runs tbody tr').first().getAttribute('data-run-id')).not.toBe(id);
    await page.getByLabel('Status').selectOption('');
    // While a run is active the page re-renders every second: what is typed must survive that until Enter.
    const active = String((await qwex(sb, ['run', '--detach', '--name', 'keeps-the-page-live', '--', 'sleep', '60'])).stdout).trim();
    await expect.poll(async () => page.locator(`table.runs tbody tr[data-run-id="${active}"]`).count()).toBe(1);
    await page.getByLabel('Text').fill('sub/n.txt');
    await page.waitForTimeout(2500);
    expect(await page.getByLabel('Text').inputValue()).toBe('sub/n.txt');
    await page.getByLabel('Text').press('Enter');
    await expect.poll(async () => page.locator('table.runs tbody tr').count()).toBe(1);
    expect(await page.locator('table.runs tbody tr').first().getAttribute('data-run-id')).toBe(id);
    expect(page.url()).toContain('q=sub%2Fn.txt');
    expect((await qwex(sb, ['cancel', active])).exitCode).toBe(0);
    await page.getByLabel('Text').fill('');
    await page.getByLabel('Text').press('Enter');
    await page.getByLabel('Text').blur();
    await expect.poll(async () => page.locator('table.runs tbody tr').count()).toBeGreaterThan(1);
    await screenshot(page, 'local-runs');
    await page.setViewportSize({ width: 390, height: 844 });
    await screenshot(page, 'local-runs-phone');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('reruns a run from its page, after asking: the same command on the same code, as a new run', async () => {
    const original = String((await qwex(sb, ['run', '--detach', '--name', 'rerun-me', '--', 'sh', '-c', 'cat marker.txt'], {})).stdout).trim();
    await until(async () => ((await qwexJson<{ status: string }>(sb, ['status', original])).status !== 'pending' ? true : undefined), 30_000, 'the run to start');
    await page.goto(`${base}/runs/${original}`);
    await page.getByRole('button', { name: 'Rerun' }).click();
    await page.getByRole('dialog', { name: 'Run this again?' }).getByRole('button', { name: 'Rerun', exact: true }).click();
    await page.waitForURL((u) => u.pathname.startsWith('/runs/') && !u.pathname.endsWith(original));
    const copy = new URL(page.url()).pathname.split('/').pop()!;
    await expect.poll(() => page.getByRole('heading', { level: 1 }).locator('.status').textContent(), { timeout: 30_000 }).toMatch(/succeeded|failed/);
    const [before, after] = await Promise.all([original, copy].map((id) => qwexJson<{ job: { command: string[]; workspace?: { manifest: string } } }>(sb, ['status', id])));
    expect(after!.job.command).toEqual(before!.job.command);
    expect(after!.job.workspace?.manifest).toBe(before!.job.workspace?.manifest);
  });

  it('shows a run waiting in a Kueue queue with Kueue\'s reason and its place, until it is admitted and runs', async (ctx) => {
    requireComponent(ctx, 'QWEX_REQUIRE_DOCKER', clusterReason);
    const started = await qwex(sb, ['run', '--detach', '--backend', 'kueue', '--name', 'queued-in-kueue', '--', 'sh', '-c', 'echo admitted']);
    expect(started.exitCode, String(started.stderr)).toBe(0);
    const id = String(started.stdout).trim();
    await page.goto(`${base}/`);
    const row = page.locator(`tr[data-run-id="${id}"]`);
    await expect.poll(async () => (await row.textContent()) ?? '', { timeout: 30_000 }).toContain(`Kueue LocalQueue ${TEST_QUEUE} #1: Pending`);
    const listed = await page.evaluate(async (runId) => (await (await fetch(`/v1/runs/${runId}`)).json()) as CloudRun, id);
    // A run waiting for Kueue's admission is `pending`, with what it waits for (the one rule of every backend).
    expect(listed).toMatchObject({ status: 'pending', queue: TEST_QUEUE, waiting: { phase: 'queued', reason: 'Pending', position: 1, where: `Kueue LocalQueue ${TEST_QUEUE}` } });
    await row.getByRole('link', { name: 'queued-in-kueue' }).click();
    await expect.poll(async () => (await page.getByRole('status').first().textContent()) ?? '').toMatch(/Waiting: Kueue LocalQueue .* #1: Pending: couldn't assign flavors/);
    await screenshot(page, 'local-run-waiting');
    kueue!.fake!.setKueueQuota(1);
    await expect.poll(() => page.getByRole('heading', { level: 1 }).locator('.status').textContent(), { timeout: 60_000 }).toBe('succeeded');
    expect(await page.getByRole('status').count()).toBe(0);
  }, 120_000);

  it('answers the page of a workflow that does not exist with a clear 404', async () => {
    await page.goto(`${base}/workflows/01a0000000000000`);
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/no workflow 01a0000000000000/);
    expect(await page.evaluate(async () => (await fetch('/v1/workflows/01a0000000000000')).status)).toBe(404);
  });

  it('lists every run of the index with the API\'s own shape', async () => {
    const listed = await page.evaluate(async () => (await (await fetch('/v1/runs?limit=500')).json()) as { runs: CloudRun[] });
    const ps = await qwexJson<{ id: string; status: string }[]>(sb, ['ps', '--all', '--last', '0']);
    expect(listed.runs.map((r) => r.id).sort()).toEqual(ps.map((r) => r.id).sort());
    for (const run of listed.runs) expect(run.status).toBe(ps.find((r) => r.id === run.id)?.status);
  });

  it('shows a run waiting in qwexd\'s queue with its place, through qwexd once it runs', async () => {
    expect((await qwex(sb, ['daemon', 'start', '--concurrency', '1'])).exitCode).toBe(0);
    const first = String((await qwex(sb, ['run', '--detach', '--name', 'holds-the-slot', '--', 'sleep', '300'])).stdout).trim();
    const second = String((await qwex(sb, ['run', '--detach', '--name', 'waits-its-turn', '--', 'sleep', '300'])).stdout).trim();
    try {
      await page.goto(`${base}/`);
      const row = page.locator(`tr[data-run-id="${second}"]`);
      await expect.poll(async () => (await row.textContent()) ?? '', { timeout: 30_000 }).toContain('qwexd\'s queue #1');
      const listed = await page.evaluate(async () => (await (await fetch('/v1/runs?limit=5')).json()) as { runs: CloudRun[] });
      expect(listed.runs.find((r) => r.id === second)).toMatchObject({ status: 'pending', waiting: { phase: 'queued', position: 1, where: 'qwexd\'s queue' } });
      expect(listed.runs.find((r) => r.id === first)?.waiting).toBeUndefined();
    } finally {
      await qwex(sb, ['cancel', first, second]);
    }
  });

  it('opens a browser (here a FAKE xdg-open that records what it got) through a page only this user can read, never with the token on its command line', async () => {
    const bin = join(sb.state, 'fake-bin');
    const seen = join(sb.state, 'opener-saw.txt');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'xdg-open'), `#!/bin/sh\n{ echo "$@"; stat -c %a "$1" "$(dirname "$1")"; cat "$1"; } > '${seen}'\n`, { mode: 0o755 });
    const second = execa(process.execPath, [CLI, 'ui', '--port', '0'], { cwd: sb.project, env: { ...sb.env, PATH: `${bin}:${process.env.PATH}` }, reject: false, buffer: false });
    let printed = '';
    second.stdout!.on('data', (chunk: Buffer) => (printed += chunk.toString()));
    const { readFileSync, existsSync } = await import('node:fs');
    let opened: string | undefined;
    try {
      const text = await until(() => (existsSync(seen) && readFileSync(seen, 'utf8').includes('</p>') ? readFileSync(seen, 'utf8') : undefined), 30_000, 'the opener to be called');
      const [args, fileMode, dirMode] = text.split('\n');
      const link = printed.split('\n')[0]!;
      const token = new URL(link).searchParams.get('token')!;
      opened = args;
      expect(opened).toMatch(/\/open\.html$/);
      expect(args).not.toContain(token);
      expect([fileMode, dirMode]).toEqual(['600', '700']);
      expect(text).toContain(link.replace(/&/g, '&amp;'));
    } finally {
      second.kill('SIGTERM');
      expect((await second).exitCode).toBe(0);
    }
    // Removed once the server stopped.
    expect(opened && existsSync(opened)).toBe(false);
  });

  it('stops on SIGTERM, and the server with it', async () => {
    ui.kill('SIGTERM');
    const result = await ui;
    expect(result.exitCode).toBe(0);
    await expect(fetch(`${base}/`)).rejects.toThrow();
  });
});
