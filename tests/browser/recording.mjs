// Plays a call's recording on the admin dashboard in the system's Chromium, as an operator
// would: sign in, open an ended call from the history, wait for the player to load the
// recording's metadata, click a transcript line and see the player move to that line's time.
// Run by tests/admin_browser.rs, which starts the server with the call and its WAV.
//
// Environment: DASHBOARD_URL, DASHBOARD_TOKEN (optional), CALL_ID (the recorded call),
// ARTIFACT_DIR (where the screenshot goes), CHROMIUM (default /usr/bin/chromium), WAIT_MS
// (how long each step may take, default 30000).
// Prints one JSON line with what it saw; exits 1 with the reason when a step fails.

import { join } from 'node:path';
import { launch, required, settings, signIn, watchErrors, watchRequests } from './launch.mjs';

const [base, callId] = required('DASHBOARD_URL', 'CALL_ID');
const token = process.env.DASHBOARD_TOKEN || '';
const { artifacts, wait } = settings(30000);

const { page, close } = await launch({ autoplay: true });

const problems = [];
watchRequests(page, new URL(base).origin, problems, { allow: (u) => u.startsWith('blob:') });
let signedIn = !token;
watchErrors(page, problems, { ignore: (text) => !signedIn && text.includes('401') });

const result = { steps: [] };
const step = (name) => result.steps.push(name);

try {
  await page.goto(base + '/', { waitUntil: 'domcontentloaded' });
  if (token) {
    await signIn(page, token, wait);
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
  await close();
} catch (e) {
  await page.screenshot({ path: join(artifacts, 'dashboard-recording-failure.png') }).catch(() => {});
  console.error(`recording test failed after steps [${result.steps.join(', ')}]: ${e.message}`);
  console.error(problems.join('\n'));
  await close();
  process.exit(1);
}
