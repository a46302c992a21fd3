// Drives the admin dashboard in the system's Chromium, as an operator would: sign in, wait for
// a live call and a transcript line, hang the call up, see it end. Run by
// tests/admin_browser.rs, which starts the server and the call.
//
// Environment: DASHBOARD_URL (the admin base URL), DASHBOARD_TOKEN (optional admin token),
// ARTIFACT_DIR (where the screenshots go), CHROMIUM (default /usr/bin/chromium),
// WAIT_MS (how long each step may take, default 30000).
// Prints one JSON line with what it saw; exits 1 with the reason when a step fails.

import { join } from 'node:path';
import { launch, required, settings, signIn, watchErrors, watchRequests } from './launch.mjs';

const [base] = required('DASHBOARD_URL');
const token = process.env.DASHBOARD_TOKEN || '';
const { artifacts, wait } = settings(30000);

const { page, close } = await launch();

// The page must load nothing from elsewhere and log no errors (a CSP violation is one).
const problems = [];
watchRequests(page, new URL(base).origin, problems);
// before signing in, the page's probe of the API is answered 401 on purpose
let signedIn = !token;
watchErrors(page, problems, { ignore: (text) => !signedIn && text.includes('401') });

const result = { steps: [] };
const step = (name) => result.steps.push(name);

try {
  await page.goto(base + '/', { waitUntil: 'domcontentloaded' });
  step('page loaded');
  if (token) {
    await signIn(page, token, wait);
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
  result.meta = (await page.locator('#call-meta').textContent()).trim();
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
  await close();
} catch (e) {
  await page.screenshot({ path: join(artifacts, 'dashboard-failure.png') }).catch(() => {});
  console.error(`dashboard test failed after steps [${result.steps.join(', ')}]: ${e.message}`);
  console.error(problems.join('\n'));
  await close();
  process.exit(1);
}
