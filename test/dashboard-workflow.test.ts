/**
 * The workflow page against the record shape of issue 16 (`{ id, status,
 * stages: [{ name, runId, status, exitCode, needs }] }`), before workflows
 * exist: `qwex ui`'s server (server/ui-local.ts, in this process) is given a
 * FAKE workflow source, named so, whose stages are real runs of the
 * sandbox (their states read from their records). What is real: the runs,
 * the server, the API route, the page, the browser.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { WorkflowView } from '../src/cloud/api.js';
import { readRunRecord } from '../src/store/run-record.js';
import { RunStore } from '../src/store/run-store.js';
import { chromiumUnavailable, launchBrowser, requireChromium, screenshot } from './browser.js';
import { qwex, qwexJson, sandbox, until, type Sandbox } from './helpers.js';

const WORKFLOW = '01a23300-0000-7000-8000-00000000f100';

describe('the workflow page (with a fake workflow source: a graph with a waiting stage)', () => {
  let sb: Sandbox;
  let ui: { url: string; close(): Promise<void> } | undefined;
  let browser: import('playwright-core').Browser;
  /** Logged in once: the link's token works once. */
  let page: import('playwright-core').Page;
  const runs: Record<string, string> = {};

  beforeAll(async () => {
    if (chromiumUnavailable()) return;
    sb = sandbox();
    Object.assign(process.env, sb.env);
    const start = async (name: string, script: string): Promise<void> => {
      const r = await qwex(sb, ['run', '--detach', '--name', name, '--', 'sh', '-c', script]);
      runs[name] = String(r.stdout).trim();
    };
    await start('prepare', 'echo prepared');
    await start('baseline', 'echo baseline');
    await start('train', 'echo training; sleep 300');
    for (const name of ['prepare', 'baseline']) {
      await until(async () => ((await qwexJson<{ status: string }>(sb, ['status', runs[name]!])).status === 'succeeded' ? true : undefined), 30_000, `${name} to end`);
    }
    await until(async () => ((await qwexJson<{ status: string }>(sb, ['status', runs.train!])).status === 'running' ? true : undefined), 30_000, 'train to run');

    const store = new RunStore();
    const stage = (name: string, needs: string[]): WorkflowView['stages'][number] => {
      const id = runs[name];
      if (!id) return { name, runId: null, status: 'waiting', exitCode: null, needs };
      const run = readRunRecord(store.resolve(id).dir);
      return { name, runId: id, status: run.status, exitCode: run.exitCode, needs };
    };
    const { startLocalUi } = await import('../server/ui-local.js');
    ui = await startLocalUi({
      port: 0,
      workflows: async (_principal, id) =>
        id === WORKFLOW
          ? { id, status: 'running', stages: [stage('prepare', []), stage('baseline', ['prepare']), stage('train', ['prepare']), stage('deploy', ['train', 'baseline'])] }
          : undefined,
    });
    browser = await launchBrowser();
    page = await (await browser.newContext({ viewport: { width: 1100, height: 760 } })).newPage();
    await page.goto(ui.url);
    await page.getByRole('heading', { name: 'Runs' }).waitFor();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await ui?.close();
    if (runs.train) await qwex(sb, ['cancel', runs.train]);
    await sb?.cleanup();
  });

  beforeEach((ctx) => requireChromium(ctx));

  it('draws the stages as a graph with their states, each linked to its run', async () => {
    await page.goto(new URL(`/workflows/${WORKFLOW}`, ui!.url).href);
    const nodes = page.locator('svg.graph g.node');
    await expect.poll(() => nodes.count()).toBe(4);
    const states = Object.fromEntries(
      await Promise.all(['prepare', 'baseline', 'train', 'deploy'].map(async (name) => [name, await page.locator(`g.node[data-stage="${name}"]`).getAttribute('class')] as const)),
    );
    expect(states).toEqual({ prepare: 'node node-succeeded', baseline: 'node node-succeeded', train: 'node node-running', deploy: 'node node-waiting' });
    // needs drawn as edges: prepare->baseline, prepare->train, train->deploy, baseline->deploy.
    expect(await page.locator('svg.graph path.edge').count()).toBe(4);
    // Columns by depth: deploy is right of train, which is right of prepare.
    const x = async (name: string): Promise<number> => Number(await page.locator(`g.node[data-stage="${name}"] rect`).getAttribute('x'));
    expect(await x('prepare')).toBeLessThan(await x('train'));
    expect(await x('train')).toBeLessThan(await x('deploy'));
    expect(await x('baseline')).toBe(await x('train'));
    await screenshot(page, 'workflow');
    // A stage is a link to its run; a stage without a run is not.
    expect(await page.getByRole('link', { name: 'stage deploy: waiting; open its run' }).count()).toBe(0);
    await page.getByRole('link', { name: 'stage train: running; open its run' }).click();
    await page.getByRole('heading', { name: /train/ }).waitFor();
    expect(page.url()).toContain(`/runs/${runs.train}`);
  });

  it('answers 404 for a workflow the source does not know', async () => {
    const answer = await page.evaluate(async () => {
      const r = await fetch('/v1/workflows/not-a-workflow');
      return { status: r.status, body: (await r.json()) as { error: { code: string; message: string } } };
    });
    expect(answer.status).toBe(404);
    expect(answer.body.error).toMatchObject({ code: 'QWEX_NOT_FOUND', message: 'no workflow not-a-workflow' });
  });
});

describe('the workflow page of a real workflow (qwex workflow run, then qwex ui)', () => {
  let sb: Sandbox;
  let ui: { url: string; close(): Promise<void> } | undefined;
  let browser: import('playwright-core').Browser;
  let workflowId = '';

  beforeAll(async () => {
    if (chromiumUnavailable()) return;
    sb = sandbox();
    Object.assign(process.env, sb.env);
    const { writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    writeFileSync(join(sb.project, 'qwex.yaml'), 'stages:\n  - name: make\n    command: sh -c "mkdir -p out; echo 41 > out/n"\n  - name: use\n    command: sh -c "cat inputs/make/out/n"\n');
    const run = await qwex(sb, ['workflow', 'run', '--json', '-q']);
    expect(run.exitCode, String(run.stderr)).toBe(0);
    workflowId = (JSON.parse(String(run.stdout)) as { id: string }).id;
    const { startLocalUi } = await import('../server/ui-local.js');
    ui = await startLocalUi({ port: 0 });
    browser = await launchBrowser();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await ui?.close();
    if (sb) await qwex(sb, ['daemon', 'stop']); // none without Chromium: beforeAll made nothing
    await sb?.cleanup();
  });

  beforeEach((ctx) => requireChromium(ctx));

  it('shows each stage with its run and state, from the workflow record and the stage runs', async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(ui!.url);
    await page.getByRole('heading', { name: 'Runs' }).waitFor();
    const answer = await page.evaluate(async (id) => (await (await fetch(`/v1/workflows/${id}`)).json()) as WorkflowView, workflowId);
    expect(answer).toMatchObject({ id: workflowId, status: 'succeeded', stages: [{ name: 'make', status: 'succeeded', needs: [] }, { name: 'use', status: 'succeeded', needs: ['make'] }] });
    expect(answer.stages.every((s) => typeof s.runId === 'string')).toBe(true);
    await page.goto(new URL(`/workflows/${workflowId}`, ui!.url).href);
    await page.getByRole('link', { name: 'stage use: succeeded; open its run' }).waitFor();
  });
});
