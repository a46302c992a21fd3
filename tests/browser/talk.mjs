// A test call from the relay's /talk page in the system's Chromium, with a fake microphone
// playing a speech file: sign in, pick the agent, Connect, hear the greeting, say the request
// (the file does), see the agent confirm the booking; then, in a second tab, the dashboard
// shows the web call with its transcript and its Hang up ends the browser's call. Run by
// tests/talk_browser.rs, which starts the relay (with the simulator) and makes the speech file.
//
// Environment: DASHBOARD_URL (the relay's admin base URL), DASHBOARD_TOKEN (admin token),
// SPEECH_WAV (the microphone's sound), AGENT (the agent to pick), ARTIFACT_DIR (screenshots),
// CHROMIUM (default /usr/bin/chromium), WAIT_MS (how long each step may take, default 30000).
// Prints one JSON line with what it saw; exits 1 with the reason when a step fails.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.DASHBOARD_URL;
const token = process.env.DASHBOARD_TOKEN || '';
const speech = process.env.SPEECH_WAV;
const agent = process.env.AGENT || 'receptionist';
const artifacts = process.env.ARTIFACT_DIR || '.';
const wait = Number(process.env.WAIT_MS || 30000);
if (!base || !speech) {
  console.error('DASHBOARD_URL and SPEECH_WAV must be set');
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
    // the microphone is the speech file, played once; the permission prompt is answered yes
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${speech}%noloop`,
    '--autoplay-policy=no-user-gesture-required',
  ],
  viewport: { width: 1280, height: 900 },
});
const origin = new URL(base).origin;
await context.grantPermissions(['microphone'], { origin });

const result = { steps: [], problems: [] };
const step = (name) => result.steps.push(name);
let apiOrigin = null; // the realtime API the page may reach (from its <meta>)
const signedIn = new Set(); // the tabs that have signed in (each tab has its own sessionStorage)

// Each tab must load nothing from elsewhere (the realtime API aside, for the talk page) and log
// no errors (a CSP violation is one).
function watch(page, label, allowApi) {
  page.on('request', (r) => {
    const u = r.url();
    if (u.startsWith(origin) || u.startsWith('data:')) return;
    if (allowApi && apiOrigin && u.startsWith(apiOrigin)) return;
    result.problems.push(`${label}: request to another origin: ${u}`);
  });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // before signing in, the page's first API call is answered 401 on purpose
    if (token && !signedIn.has(page) && m.text().includes('401')) return;
    result.problems.push(`${label}: console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.problems.push(`${label}: page error: ${e.message}`));
}

async function signIn(page) {
  if (!token) return;
  await page.getByTestId('token').waitFor({ state: 'visible', timeout: wait });
  await page.getByTestId('token').fill(token);
  await page.getByTestId('sign-in').click();
  await page.locator('#login').waitFor({ state: 'hidden', timeout: wait });
  signedIn.add(page);
}

const talk = context.pages()[0] || await context.newPage();
watch(talk, 'talk', true);
// the page's weight: every byte this server sends for it
const weight = {};
talk.on('response', async (r) => {
  const u = new URL(r.url());
  if (u.origin !== origin || !['/talk', '/talk.js', '/talk.css'].includes(u.pathname)) return;
  try { weight[u.pathname] = (await r.body()).length; } catch (e) { /* navigated away */ }
});

try {
  await talk.goto(base + '/talk', { waitUntil: 'domcontentloaded' });
  apiOrigin = new URL(await talk.locator('meta[name="openai-base"]').getAttribute('content')).origin;
  step('page loaded');
  await signIn(talk);
  step('signed in');

  const select = talk.getByLabel('Agent', { exact: true });
  await talk.locator(`#agent option[value="${agent}"]`).waitFor({ state: 'attached', timeout: wait });
  result.agents = await talk.locator('#agent option').evaluateAll((os) => os.map((o) => o.value));
  await select.selectOption(agent);
  step('agent picked');

  await talk.getByRole('button', { name: 'Connect' }).click();
  await talk.locator('#state[data-state="connected"]').waitFor({ timeout: wait });
  result.connected = true;
  step('connected');

  // the greeting: heard on the agent's track (the meter) and written in the transcript
  await talk.locator('#timing[data-first-audio-ms]').waitFor({ state: 'attached', timeout: wait });
  result.first_audio_ms = Number(await talk.locator('#timing').getAttribute('data-first-audio-ms'));
  result.connected_ms = Number(await talk.locator('#timing').getAttribute('data-connected-ms'));
  const greeting = talk.locator('#transcript .turn.agent:not(.partial)').first();
  await greeting.waitFor({ timeout: wait });
  result.greeting = (await greeting.locator('.turn-text').textContent()).trim();
  step('greeting heard');

  // the speech file asks for an appointment; the relay's tool books it and the agent says so
  const callerLine = talk.locator('#transcript .turn.caller').first();
  await callerLine.waitFor({ timeout: wait });
  result.caller = (await callerLine.locator('.turn-text').textContent()).trim();
  await talk.locator('#transcript [data-testid="event-chip"]', { hasText: 'create_booking' })
    .waitFor({ timeout: wait });
  const confirm = talk.locator('#transcript .turn.agent:not(.partial)', { hasText: 'booked' }).first();
  await confirm.waitFor({ timeout: wait });
  result.confirmation = (await confirm.locator('.turn-text').textContent()).trim();
  result.call_id = await talk.locator('#state').getAttribute('data-call-id');
  step('booked');

  // a typed message: shown as yours, and the agent answers it (the script's fallback line)
  await talk.getByLabel('Message to the agent').fill('Thank you, that is all.');
  await talk.getByRole('button', { name: 'Send' }).click();
  result.typed = (await talk.locator('#transcript .turn.caller').last().locator('.turn-text').textContent()).trim();
  const reply = talk.locator('#transcript .turn.agent:not(.partial)', { hasText: 'anything else' }).first();
  await reply.waitFor({ timeout: wait });
  result.reply = (await reply.locator('.turn-text').textContent()).trim();
  step('typed message answered');

  // Interrupt while the agent speaks: its audio is cut off
  await talk.getByLabel('Message to the agent').fill('Could you say that again?');
  await talk.getByRole('button', { name: 'Send' }).click();
  await talk.locator('#agent-level[data-speaking="true"]').waitFor({ state: 'attached', timeout: wait });
  await talk.getByRole('button', { name: 'Interrupt' }).click();
  await talk.locator('#transcript [data-testid="event-chip"]', { hasText: 'agent interrupted' })
    .waitFor({ timeout: wait });
  result.interrupted = await talk.locator('#agent-level').getAttribute('data-speaking');
  step('interrupted');

  // Mute stops the microphone track (the button says so), and Unmute brings it back
  const mute = talk.getByTestId('mute');
  await mute.click();
  result.muted = {
    pressed: await mute.getAttribute('aria-pressed'),
    label: (await mute.textContent()).trim(),
    track_enabled: await talk.evaluate(() => state.call.mic.getAudioTracks()[0].enabled),
  };
  await mute.click();
  result.unmuted_track_enabled = await talk.evaluate(() => state.call.mic.getAudioTracks()[0].enabled);
  step('muted and unmuted');
  await talk.screenshot({ path: join(artifacts, 'talk-live.png'), fullPage: true });

  // the operator's view: the web call, its transcript, and Hang up
  const dash = await context.newPage();
  watch(dash, 'dashboard', false);
  await dash.goto(base + '/', { waitUntil: 'domcontentloaded' });
  await signIn(dash);
  result.test_call_link = await dash.getByRole('link', { name: 'Test call' }).getAttribute('href');
  const item = dash.locator(`#live-calls [data-call-id="${result.call_id}"]`);
  await item.waitFor({ timeout: wait });
  result.dashboard_kind = await item.getAttribute('data-kind');
  result.dashboard_from = (await item.locator('.call-item-from').textContent()).trim();
  await item.click();
  await dash.locator(`#live-calls [data-call-id="${result.call_id}"][aria-pressed="true"]`).waitFor({ timeout: wait });
  const booked = dash.locator('#timeline [data-testid="transcript-line"]', { hasText: 'booked' }).first();
  await booked.waitFor({ timeout: wait });
  result.dashboard_lines = await dash.locator('#timeline [data-testid="transcript-line"] .turn-text')
    .evaluateAll((ls) => ls.map((l) => l.textContent.trim()));
  result.dashboard_tools = await dash.locator('#timeline [data-testid="tool-call"] .tool-name')
    .evaluateAll((ls) => ls.map((l) => l.textContent.trim()));
  result.dashboard_title = (await dash.getByTestId('call-title').textContent()).trim();
  step('dashboard shows the web call');
  await dash.screenshot({ path: join(artifacts, 'talk-dashboard.png') });
  await dash.getByTestId('hangup').click();
  await dash.locator('#call-state[data-state="ended"]').waitFor({ timeout: wait });
  step('hung up from the dashboard');

  // the browser's call ends by itself: the page did not hang up, the other side did
  await talk.locator('#state[data-state="ended"]').waitFor({ timeout: wait });
  result.talk_state = await talk.locator('#state').textContent();
  result.talk_reason = await talk.locator('#state').getAttribute('data-reason');
  result.hangup_disabled = await talk.getByRole('button', { name: 'Hang up' }).isDisabled();
  step('the page shows the call ended');
  await talk.screenshot({ path: join(artifacts, 'talk-ended.png'), fullPage: true });
  result.page_bytes = weight;
} catch (e) {
  result.error = e.message;
  await talk.screenshot({ path: join(artifacts, 'talk-failure.png'), fullPage: true }).catch(() => {});
  for (const p of context.pages()) {
    if (p !== talk) await p.screenshot({ path: join(artifacts, 'talk-failure-dashboard.png') }).catch(() => {});
  }
  result.transcript = await talk.locator('#transcript').innerText().catch(() => null);
  result.state = await talk.locator('#state').textContent().catch(() => null);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
