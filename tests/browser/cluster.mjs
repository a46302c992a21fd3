// Drives one relay's dashboard in the system's Chromium, in a cluster: a call that another
// relay has shows in the live list (marked with that relay's node), opens, and the operator
// hangs it up from here. Run by tests/cluster_admin.rs, which starts the relays and the call.
//
// Environment: DASHBOARD_URL (relay A's admin base URL), DASHBOARD_TOKEN (admin token),
// CALL_ID (the call on the other relay), CALL_NODE (that relay's node id), ARTIFACT_DIR,
// CHROMIUM, WAIT_MS (default 30000).
// Prints one JSON line with what it saw; exits 1 with the reason when a step fails.

import { join } from 'node:path';
import { launch, required, settings, signIn, watchErrors, watchRequests } from './launch.mjs';

const [base, token, callId, node] = required('DASHBOARD_URL', 'DASHBOARD_TOKEN', 'CALL_ID', 'CALL_NODE');
const { artifacts, wait } = settings(30000);

const { page, close } = await launch();
const problems = [];
watchRequests(page, new URL(base).origin, problems);
let signedIn = false;
watchErrors(page, problems, { ignore: (text) => !signedIn && text.includes('401') });

const result = { steps: [] };
const step = (name) => result.steps.push(name);

try {
  await page.goto(base + '/', { waitUntil: 'domcontentloaded' });
  await signIn(page, token, wait);
  signedIn = true;
  step('signed in');

  const item = page.locator(`#live-calls [data-call-id="${callId}"]`);
  await item.waitFor({ state: 'visible', timeout: wait });
  result.item_node = await item.getAttribute('data-node');
  result.item_text = (await item.textContent()).trim();
  step('call of the other relay listed');
  const cluster = page.getByTestId('cluster');
  await cluster.waitFor({ state: 'visible', timeout: wait });
  result.cluster = (await cluster.textContent()).trim();

  await item.click();
  await page.locator(`#live-calls [data-call-id="${callId}"][aria-pressed="true"]`).waitFor({ timeout: wait });
  await page.locator('#call-state[data-state="answered"]').waitFor({ timeout: wait });
  result.meta = (await page.locator('#call-meta').textContent()).trim();
  step('call opened');
  await page.screenshot({ path: join(artifacts, 'cluster-live.png') });

  await page.getByTestId('hangup').click();
  step('hang up clicked');
  // the ended event comes from the other relay, through this one's event stream
  await page.locator('#call-state[data-state="ended"]').waitFor({ timeout: wait });
  await page.locator(`#recent-calls [data-call-id="${callId}"]`).waitFor({ timeout: wait });
  result.state_after = (await page.getByTestId('call-state').textContent()).trim();
  result.live_after = await page.locator(`#live-calls [data-call-id="${callId}"]`).count();
  step('call ended');
  await page.screenshot({ path: join(artifacts, 'cluster-ended.png') });
  result.problems = problems;
  console.log(JSON.stringify(result));
} catch (e) {
  await page.screenshot({ path: join(artifacts, 'cluster-failure.png') }).catch(() => {});
  console.error(`failed after steps ${JSON.stringify(result.steps)}: ${e.message}`);
  console.error(`problems: ${JSON.stringify(problems)}`);
  process.exitCode = 1;
} finally {
  await close();
}
