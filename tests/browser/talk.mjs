// A test call from the relay's /talk page in the system's Chromium, with a fake microphone
// playing a speech file: sign in, pick the agent, Connect, hear the greeting, say the request
// (the file does), see the agent confirm the booking; then, in a second tab, the dashboard
// shows the web call with its transcript and its Hang up ends the browser's call. Run by
// tests/talk_browser.rs, which starts the relay (with the simulator) and makes the speech file.
//
// Environment: DASHBOARD_URL (the relay's admin base URL), DASHBOARD_TOKEN (admin token),
// SPEECH_WAV (the microphone's sound), AGENT (the agent to pick), ARTIFACT_DIR (screenshots),
// CHROMIUM (default /usr/bin/chromium), WAIT_MS (how long each step may take, default 30000),
// RECORDED (set when the relay records the call: the notice, the upload, the dashboard's player).
// Prints one JSON line with what it saw; exits 1 with the reason when a step fails.

import { join } from 'node:path';
import { launch, required, settings, signIn as signInWith, watchErrors, watchRequests } from './launch.mjs';

const [base, speech] = required('DASHBOARD_URL', 'SPEECH_WAV');
const token = process.env.DASHBOARD_TOKEN || '';
const agent = process.env.AGENT || 'receptionist';
const { artifacts, wait } = settings(30000);
const origin = new URL(base).origin;

// the microphone is the speech file, played once; the permission prompt is answered yes
const { context, page: talk, close } = await launch({
  viewport: { width: 1280, height: 900 },
  microphone: { file: speech, loop: false, origin },
  autoplay: true,
});

const result = { steps: [], problems: [] };
const step = (name) => result.steps.push(name);
let apiOrigin = null; // the realtime API the page may reach (from its <meta>)
const signedIn = new Set(); // the tabs that have signed in (each tab has its own sessionStorage)

// Each tab must load nothing from elsewhere (the realtime API aside, for the talk page) and log
// no errors (a CSP violation is one).
function watch(page, label, allowApi) {
  watchRequests(page, origin, result.problems, {
    label,
    // blob: URLs of this origin are the dashboard's player playing a fetched recording
    allow: (u) => u.startsWith(`blob:${origin}/`) || (allowApi && apiOrigin && u.startsWith(apiOrigin)),
  });
  // before signing in, the page's first API call is answered 401 on purpose
  watchErrors(page, result.problems, {
    label,
    ignore: (t) => token && !signedIn.has(page) && t.includes('401'),
  });
}

async function signIn(page) {
  if (!token) return;
  await signInWith(page, token, wait);
  signedIn.add(page);
}

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

  // with recording on (RECORDED=1), the relay's answer says so and the page tells the caller
  if (process.env.RECORDED) {
    const notice = talk.getByTestId('recording-notice');
    await notice.waitFor({ state: 'visible', timeout: wait });
    result.recording_notice = (await notice.textContent()).trim();
    await talk.locator('#rec-state[data-state="recording"]').waitFor({ state: 'attached', timeout: wait });
    step('recording');
  }

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

  // the call is over: the page uploads its recording once, and the dashboard plays it
  if (process.env.RECORDED) {
    await talk.locator('#rec-state[data-state="saved"], #rec-state[data-state="failed"]')
      .waitFor({ state: 'attached', timeout: wait });
    result.recording_state = await talk.locator('#rec-state').getAttribute('data-state');
    result.recording_text = (await talk.locator('#rec-state').textContent()).trim();
    step('recording uploaded');
    // the dashboard still shows the call: the recording's event brings its player
    await dash.waitForFunction(() => {
      const p = document.getElementById('player');
      return p && p.readyState >= 1 && p.duration > 0;
    }, null, { timeout: wait });
    result.dashboard_player = await dash.evaluate(() => {
      const p = document.getElementById('player');
      return { visible: !p.hidden && !p.closest('[hidden]'), duration: p.duration, blob: p.src.startsWith('blob:') };
    });
    step('the dashboard plays the recording');
    await dash.screenshot({ path: join(artifacts, 'talk-dashboard-recording.png') });
  }
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
  await close();
}

console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
