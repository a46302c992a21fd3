// Plays a call's recording on the admin dashboard in the system's Chromium, as an operator
// would: sign in, open an ended call from the history, wait for the player to load the
// recording's metadata, click a transcript line and see the player move to that line's time.
// Run by tests/admin_browser.rs, which starts the server with the call and its WAV.
//
// Environment: DASHBOARD_URL, DASHBOARD_TOKEN (optional), CALL_ID (the recorded call),
// ARTIFACT_DIR (where the screenshot goes), CHROMIUM (default /usr/bin/chromium), WAIT_MS
// (how long each step may take, default 30000).
// Prints one JSON line with what it saw; exits 1 with the reason when a step fails.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.DASHBOARD_URL;
const token = process.env.DASHBOARD_TOKEN || '';
const callId = process.env.CALL_ID;
const artifacts = process.env.ARTIFACT_DIR || '.';
const wait = Number(process.env.WAIT_MS || 30000);
if (!base || !callId) {
  console.error('DASHBOARD_URL and CALL_ID must be set');
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
    '--autoplay-policy=no-user-gesture-required',
  ],
  viewport: { width: 1440, height: 900 },
});
const page = context.pages()[0] || await context.newPage();

const problems = [];
const origin = new URL(base).origin;
page.on('request', (r) => {
  const u = r.url();
  if (!u.startsWith(origin) && !u.startsWith('data:') && !u.startsWith('blob:')) problems.push(`request to another origin: ${u}`);
});
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
  if (token) {
    await page.getByTestId('token').waitFor({ state: 'visible', timeout: wait });
    await page.getByTestId('token').fill(token);
    await page.getByTestId('sign-in').click();
    await page.locator('#login').waitFor({ state: 'hidden', timeout: wait });
    signedIn = true;
    step('signed in');
  }
  const item = page.locator(`#recent-calls [data-call-id="${callId}"]`);
  await item.waitFor({ state: 'visible', timeout: wait });
  await item.click();
  step('call opened');

  // the player has the recording once its metadata (length) is loaded
  await page.waitForFunction(() => {
    const p = document.getElementById('player');
    return p && p.readyState >= 1 && p.duration > 0;
  }, null, { timeout: wait });
  result.duration = await page.evaluate(() => document.getElementById('player').duration);
  result.src_is_blob = await page.evaluate(() => document.getElementById('player').src.startsWith('blob:'));
  result.meta = (await page.locator('#recording-meta').textContent()).trim();
  step('recording loaded');

  // a transcript line moves the player to its time
  const line = page.locator('#timeline [data-testid="transcript-line"]').nth(1);
  result.seek_to = Number(await line.getAttribute('data-seek'));
  result.before = await page.evaluate(() => document.getElementById('player').currentTime);
  await line.click();
  await page.waitForFunction((t) => {
    const p = document.getElementById('player');
    return Math.abs(p.currentTime - t) < 1.0 && p.currentTime >= t - 0.05;
  }, result.seek_to, { timeout: wait });
  result.after = await page.evaluate(() => document.getElementById('player').currentTime);
  step('line clicked');
  await page.evaluate(() => document.getElementById('player').pause());
  await page.screenshot({ path: join(artifacts, 'dashboard-recording.png') });
  result.problems = problems;
  console.log(JSON.stringify(result));
  await context.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  await page.screenshot({ path: join(artifacts, 'dashboard-recording-failure.png') }).catch(() => {});
  console.error(`recording test failed after steps [${result.steps.join(', ')}]: ${e.message}`);
  console.error(problems.join('\n'));
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
