// Drives the admin dashboard in the system's Chromium, as an operator would: sign in, wait for
// a live call and a transcript line, hang the call up, see it end. Run by
// tests/admin_browser.rs, which starts the server and the call.
//
// Environment: DASHBOARD_URL (the admin base URL), DASHBOARD_TOKEN (optional admin token),
// ARTIFACT_DIR (where the screenshots go), CHROMIUM (default /usr/bin/chromium),
// WAIT_MS (how long each step may take, default 30000).
// Prints one JSON line with what it saw; exits 1 with the reason when a step fails.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.DASHBOARD_URL;
const token = process.env.DASHBOARD_TOKEN || '';
const artifacts = process.env.ARTIFACT_DIR || '.';
const wait = Number(process.env.WAIT_MS || 30000);
if (!base) {
  console.error('DASHBOARD_URL is not set');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const profile = mkdtempSync(join(tmpdir(), 'voxrelay-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1440, height: 900 },
});
const page = context.pages()[0] || await context.newPage();

// The page must load nothing from elsewhere and log no errors (a CSP violation is one).
const problems = [];
const origin = new URL(base).origin;
page.on('request', (r) => {
  const u = r.url();
  if (!u.startsWith(origin) && !u.startsWith('data:')) problems.push(`request to another origin: ${u}`);
});
// before signing in, the page's probe of the API is answered 401 on purpose
let signedIn = !token;
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  if (!signedIn && m.text().includes('401')) return;
  problems.push(`console error: ${m.text()}`);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

const result = { steps: [] };
const step = (name) => result.steps.push(name);

try {
  await page.goto(base + '/', { waitUntil: 'domcontentloaded' });
  step('page loaded');
  if (token) {
    await page.getByTestId('token').waitFor({ state: 'visible', timeout: wait });
    await page.getByTestId('token').fill(token);
    await page.getByTestId('sign-in').click();
    await page.locator('#login').waitFor({ state: 'hidden', timeout: wait });
    signedIn = true;
    step('signed in');
  }

  const liveCall = page.locator('#live-calls [data-testid="call-item"]').first();
  await liveCall.waitFor({ state: 'visible', timeout: wait });
  result.call_id = await liveCall.getAttribute('data-call-id');
  step('call listed');
  await liveCall.click();
  await page.locator(`#live-calls [data-call-id="${result.call_id}"][aria-pressed="true"]`)
    .waitFor({ timeout: wait });

  const line = page.locator('#timeline [data-testid="transcript-line"]').first();
  await line.waitFor({ state: 'visible', timeout: wait });
  result.transcript = (await line.locator('.turn-text').textContent()).trim();
  result.speaker = await line.getAttribute('data-speaker');
  step('transcript line shown');
  result.state_before = await page.getByTestId('call-state').getAttribute('data-state');
  await page.screenshot({ path: join(artifacts, 'dashboard-live.png') });

  await page.getByTestId('hangup').click();
  step('hang up clicked');
  await page.locator('#call-state[data-state="ended"]').waitFor({ timeout: wait });
  await page.locator(`#recent-calls [data-call-id="${result.call_id}"]`).waitFor({ timeout: wait });
  result.live_after = await page.locator(`#live-calls [data-call-id="${result.call_id}"]`).count();
  result.state_after = (await page.getByTestId('call-state').textContent()).trim();
  result.hangup_disabled = await page.getByTestId('hangup').isDisabled();
  step('call ended');
  await page.screenshot({ path: join(artifacts, 'dashboard-ended.png') });
  result.problems = problems;
  console.log(JSON.stringify(result));
  await context.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  await page.screenshot({ path: join(artifacts, 'dashboard-failure.png') }).catch(() => {});
  console.error(`dashboard test failed after steps [${result.steps.join(', ')}]: ${e.message}`);
  console.error(problems.join('\n'));
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
