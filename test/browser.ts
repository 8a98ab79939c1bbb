/**
 * A real, headless Chromium for the dashboard's tests: Debian's `chromium`
 * package (never a browser downloaded by Playwright), driven by
 * playwright-core. Tests skip with the reason when it is missing, and fail
 * instead with QWEX_REQUIRE_CHROMIUM=1 (as in CI, which installs it).
 *
 * Screenshots of the pages go to test-results/screenshots/; with
 * QWEX_UPDATE_SCREENSHOTS=1 they also replace the ones docs/dashboard.md
 * shows (docs/images/).
 */
import { existsSync, mkdirSync, copyFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROOT, requireComponent } from './helpers.js';

export const CHROMIUM = process.env.QWEX_CHROMIUM ?? '/usr/bin/chromium';

/** Why the browser tests cannot run here, or undefined when they can. */
export function chromiumUnavailable(): string | undefined {
  return existsSync(CHROMIUM) ? undefined : `no Chromium at ${CHROMIUM} (apt-get install -y chromium; QWEX_CHROMIUM names another)`;
}

/** Skips the test (or fails it, with QWEX_REQUIRE_CHROMIUM=1) when there is no Chromium. */
export function requireChromium(ctx: { skip(): void }): void {
  requireComponent(ctx, 'QWEX_REQUIRE_CHROMIUM', chromiumUnavailable());
}

/**
 * Headless Chromium as root on a machine without network: no sandbox (root),
 * no GPU, and nothing that would try to reach the network at start.
 * Playwright gives each launch a fresh profile directory.
 */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: ['--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-dev-shm-usage'],
  });
}

const SHOTS = join(ROOT, 'test-results', 'screenshots');
const DOC_IMAGES = join(ROOT, 'docs', 'images');

/** A screenshot of the page as it is, for people (no test reads it back). */
export async function screenshot(page: Page, name: string, options: { fullPage?: boolean } = {}): Promise<void> {
  mkdirSync(SHOTS, { recursive: true });
  const file = join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: options.fullPage ?? false, animations: 'disabled', caret: 'hide' });
  if (process.env.QWEX_UPDATE_SCREENSHOTS === '1') {
    mkdirSync(DOC_IMAGES, { recursive: true });
    copyFileSync(file, join(DOC_IMAGES, `${name}.png`));
  }
}

/** A TCP port free on 127.0.0.1 just now (for a server that must be told its port). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The text of the terminal's rows as it shows them (xterm.js renders each row as an element). */
export async function terminalRows(page: Page): Promise<string[]> {
  return page.locator('.xterm-rows > div').allTextContents();
}
