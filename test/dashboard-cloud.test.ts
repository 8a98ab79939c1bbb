/**
 * The dashboard as a team member sees it on qwexcloud, in a real headless
 * Chromium (test/browser.ts) against the built server as a real process
 * (test/cloud.ts; SQLite: the server suite covers PostgreSQL): the login
 * page, a wrong token, one user's runs and not another's, a run that
 * appears without a reload, cancel from the page, an artifact download.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CSRF_HEADER, SESSION_COOKIE, type CloudRunDetail } from '../src/cloud/api.js';
import type { CloudClient } from '../src/cloud/client.js';
import { chromiumUnavailable, launchBrowser, requireChromium, screenshot } from './browser.js';
import { startCloud, type CloudServer } from './cloud.js';
import { until } from './helpers.js';

const NUMBERS = Array.from({ length: 50_000 }, (_, i) => `${i + 1}\n`).join('');

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('the dashboard on qwexcloud', () => {
  let server: CloudServer;
  let browser: Browser;
  let alice: CloudClient;
  let aliceToken: string;
  let trained: CloudRunDetail;
  let sleeper: CloudRunDetail;
  let bobs: CloudRunDetail;

  beforeAll(async () => {
    if (chromiumUnavailable()) return;
    server = await startCloud({ db: 'sqlite', targets: ['local'] });
    aliceToken = await server.token('alice');
    alice = server.client(aliceToken);
    const bob = server.client(await server.token('bob'));
    trained = await alice.submit({ job: { name: 'train-numbers', command: ['sh', '-c', 'mkdir -p out && seq 1 50000 > out/numbers.txt && printf "\\033[32mtrained\\033[0m\\n"'] } });
    sleeper = await alice.submit({ job: { name: 'long-sleeper', command: ['sleep', '300'], killGraceMs: 2000 } });
    bobs = await bob.submit({ job: { name: 'bobs-private-run', command: ['echo', 'bob'] } });
    await until(async () => ((await alice.get(trained.id)).status === 'succeeded' ? true : undefined), 30_000, 'the first run to succeed');
    browser = await launchBrowser();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.cleanup();
  });

  beforeEach((ctx) => requireChromium(ctx));

  async function loggedIn(token: string): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    await page.goto(server.url);
    await page.getByLabel('Token').fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Runs' }).waitFor();
    return { context, page };
  }

  it('refuses a wrong token on the login page, and the API without the cookie', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    try {
      const page = await context.newPage();
      await page.goto(server.url);
      await page.getByRole('heading', { name: 'Log in to qwexcloud' }).waitFor();
      await screenshot(page, 'cloud-login');
      await page.getByLabel('Token').fill('qwx_this-is-not-a-token-anyone-was-given');
      await page.getByRole('button', { name: 'Log in' }).click();
      await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/unknown or was revoked/);
      expect((await context.cookies()).map((c) => c.name)).not.toContain(SESSION_COOKIE);
      // Still the login page, and the API says 401 to this browser.
      expect(await page.getByRole('heading', { name: 'Log in to qwexcloud' }).count()).toBe(1);
      const status = await page.evaluate(async () => (await fetch('/v1/runs')).status);
      expect(status).toBe(401);
    } finally {
      await context.close();
    }
  });

  it('logs in with a token kept in an HttpOnly, SameSite=Strict cookie; shows only that user\'s runs; refuses a change without the CSRF header', async () => {
    const { context, page } = await loggedIn(aliceToken);
    try {
      const table = page.locator('table.runs');
      await table.locator(`tr[data-run-id="${trained.id}"]`).waitFor();
      await table.locator(`tr[data-run-id="${sleeper.id}"]`).waitFor();
      expect(await table.locator(`tr[data-run-id="${bobs.id}"]`).count()).toBe(0);
      expect(await page.getByText('bobs-private-run').count()).toBe(0);
      await screenshot(page, 'cloud-runs');

      const cookie = (await context.cookies()).find((c) => c.name === SESSION_COOKIE);
      // Served over plain HTTP here, so not Secure (which the browser would then never send back); over TLS it is (below).
      expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/', secure: false });
      // The page's own scripts cannot read it.
      expect(await page.evaluate(() => document.cookie)).toBe('');
      // Another user's run is as absent as a run that does not exist.
      const other = await page.evaluate(async (id) => (await fetch(`/v1/runs/${id}`)).status, bobs.id);
      expect(other).toBe(404);
      // With the cookie alone, a change is refused; with the header the page sends, it is let through (here: to a 409, the run ended).
      const statuses = await page.evaluate(
        async ([id, header]) => {
          const bare = await fetch(`/v1/runs/${id}/cancel`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
          const marked = await fetch(`/v1/runs/${id}/cancel`, { method: 'POST', headers: { 'content-type': 'application/json', [header]: '1' }, body: '{}' });
          return [bare.status, marked.status];
        },
        [trained.id, CSRF_HEADER] as const,
      );
      expect(statuses).toEqual([403, 409]);
      // Bob's run page, opened by Alice, says there is no such run.
      await page.goto(`${server.url}/runs/${bobs.id}`);
      await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/no run/);
    } finally {
      await context.close();
    }
  });

  it('shows a run submitted while the page is open without a reload', async () => {
    const { context, page } = await loggedIn(aliceToken);
    try {
      await page.evaluate(() => ((window as unknown as { loadedOnce: boolean }).loadedOnce = true));
      const late = await alice.submit({ job: { name: 'submitted-later', command: ['sh', '-c', 'echo later'] } });
      const row = page.locator(`tr[data-run-id="${late.id}"]`);
      await row.waitFor({ timeout: 20_000 });
      await expect.poll(() => row.locator('.status').textContent(), { timeout: 20_000 }).toBe('succeeded');
      expect(await page.evaluate(() => (window as unknown as { loadedOnce?: boolean }).loadedOnce)).toBe(true);
    } finally {
      await context.close();
    }
  });

  it('cancels a run from its page, after asking', async () => {
    const { context, page } = await loggedIn(aliceToken);
    try {
      await until(async () => ((await alice.get(sleeper.id)).status === 'running' ? true : undefined), 30_000, 'the sleeper to run');
      await page.goto(`${server.url}/runs/${sleeper.id}`);
      const heading = page.getByRole('heading', { level: 1 });
      await expect.poll(() => heading.locator('.status').textContent(), { timeout: 20_000 }).toBe('running');
      await page.getByRole('button', { name: 'Cancel run' }).click();
      const dialog = page.getByRole('dialog', { name: 'Cancel this run?' });
      await dialog.waitFor();
      await screenshot(page, 'cloud-cancel-confirm');
      // Dismissing first: nothing happens.
      await dialog.getByRole('button', { name: 'Keep it running' }).click();
      expect((await alice.get(sleeper.id)).status).toBe('running');
      await page.getByRole('button', { name: 'Cancel run' }).click();
      await dialog.getByRole('button', { name: 'Cancel run' }).click();
      await expect.poll(() => heading.locator('.status').textContent(), { timeout: 30_000 }).toBe('cancelled');
      const after = await alice.get(sleeper.id);
      expect(after.status).toBe('cancelled');
      expect(after.endReason).toBe('cancel');
    } finally {
      await context.close();
    }
  });

  it('downloads an artifact whose bytes have the sha256 the page and the API list', async () => {
    const { context, page } = await loggedIn(aliceToken);
    try {
      await page.goto(`${server.url}/runs/${trained.id}`);
      const link = page.getByRole('link', { name: 'Download out/numbers.txt' });
      await link.waitFor();
      // The terminal shows the coloured line as text; the log panel is there with the record.
      await expect.poll(async () => (await page.locator('.xterm-rows').textContent()) ?? '').toContain('trained');
      await screenshot(page, 'cloud-run', { fullPage: true });
      const shown = await page.locator('td.hash').first().getAttribute('title');
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      expect(download.suggestedFilename()).toBe('numbers.txt');
      const bytes = readFileSync((await download.path())!);
      const listed = (await alice.artifacts(trained.id)).artifacts.find((a) => a.path === 'out/numbers.txt');
      expect(sha256(bytes)).toBe(sha256(NUMBERS));
      expect(listed?.sha256).toBe(sha256(NUMBERS));
      expect(shown).toBe(sha256(NUMBERS));
    } finally {
      await context.close();
    }
  });

  it('logs out: the cookie is gone and the login page is back', async () => {
    const { context, page } = await loggedIn(aliceToken);
    try {
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.getByRole('heading', { name: 'Log in to qwexcloud' }).waitFor();
      expect((await context.cookies()).map((c) => c.name)).not.toContain(SESSION_COOKIE);
      expect(await page.evaluate(async () => (await fetch('/v1/me')).status)).toBe(401);
    } finally {
      await context.close();
    }
  });
});

describe('the dashboard\'s login over TLS', () => {
  it('keeps the token in a Secure, HttpOnly, SameSite=Strict cookie, which the API then accepts', async () => {
    const scratch = mkdtempSync(join(tmpdir(), 'qwex-dashboard-tls-'));
    const key = join(scratch, 'key.pem');
    const cert = join(scratch, 'cert.pem');
    await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const server = await startCloud({ db: 'sqlite', args: ['--tls-cert', cert, '--tls-key', key] });
    const send = (method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; headers: import('node:http').IncomingHttpHeaders; body: string }> =>
      new Promise((resolve, reject) => {
        const req = request(`${server.url}${path}`, { method, headers, ca: readFileSync(cert) }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
        });
        req.on('error', reject);
        req.end(body);
      });
    try {
      const token = await server.token('carol');
      const body = JSON.stringify({ token });
      const refused = await send('POST', '/v1/session', { 'content-type': 'application/json' }, body);
      expect(refused.status).toBe(403);
      const login = await send('POST', '/v1/session', { 'content-type': 'application/json', [CSRF_HEADER]: '1' }, body);
      expect(login.status).toBe(200);
      const set = login.headers['set-cookie']?.[0] ?? '';
      expect(set).toMatch(new RegExp(`^${SESSION_COOKIE}=`));
      expect(set.split(/; */).map((part) => part.toLowerCase())).toEqual(expect.arrayContaining(['secure', 'httponly', 'samesite=strict', 'path=/']));
      const me = await send('GET', '/v1/me', { cookie: set.split(';')[0]! });
      expect(JSON.parse(me.body)).toMatchObject({ user: 'carol' });
    } finally {
      await server.cleanup();
      rmSync(scratch, { recursive: true, force: true });
    }
  });
});
