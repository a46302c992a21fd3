// A browser voice app on the official Agents SDK (@openai/agents-realtime), in the system's
// Chromium with normal web security and a fake microphone playing a speech file. Run by
// tests/sdk_browser.rs, which starts the relay (the app's key server) and the simulator (the
// Realtime API).
//
// It bundles sdk/page.js with esbuild into a temporary folder, serves it from two origins of
// its own on loopback (PAGE_PORT, listed in the relay's admin.cors_origins, and OTHER_PORT, not
// listed), and on the listed one: gets a key from the relay's /api/session, connects over
// WebRTC to the simulator's /v1/realtime/calls, hears the greeting, lets the model run the
// page's tool, interrupts the answer, mutes, closes. On the other origin it only tries to get
// a key.
//
// Environment: RELAY_URL (the relay's admin base URL), RELAY_TOKEN (its admin token), CALLS_URL
// (the simulator's /v1/realtime/calls), PAGE_PORT, OTHER_PORT, MIC_WAV (the fake microphone),
// ARTIFACT_DIR (screenshots), CHROMIUM (default /usr/bin/chromium), WAIT_MS (per step, default
// 20000). Prints one JSON line with what it saw; exits 1 with the reason when a step fails.

import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, extname } from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { launch, required, settings, watchErrors } from './launch.mjs';

const [relayUrl, callsUrl, pagePortVar, otherPortVar, micWav] = required(
  'RELAY_URL', 'CALLS_URL', 'PAGE_PORT', 'OTHER_PORT', 'MIC_WAV',
);
const pagePort = Number(pagePortVar);
const otherPort = Number(otherPortVar);
const token = process.env.RELAY_TOKEN || '';
const { artifacts, wait } = settings(20000);

const result = { steps: [] };
const step = (name) => result.steps.push(name);
const work = mkdtempSync(join(tmpdir(), 'voxrelay-sdk-'));

// 1. The page, bundled as an app would ship it: one minified ES module, no source map, no
// comments, for Chromium; esbuild gives the same bytes for the same inputs.
const site = join(work, 'site');
const bundle = await build({
  entryPoints: ['sdk/page.js'],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'chrome120',
  minify: true,
  legalComments: 'none',
  sourcemap: false,
  charset: 'utf8',
  outfile: join(site, 'page.js'),
  logLevel: 'warning',
});
if (bundle.errors.length) throw new Error('the bundle did not build');
copyFileSync('sdk/index.html', join(site, 'index.html'));
const js = readFileSync(join(site, 'page.js'));
const html = readFileSync(join(site, 'index.html'));
result.bundle = {
  js_bytes: js.length,
  js_gzip_bytes: gzipSync(js, { level: 9 }).length,
  html_bytes: html.length,
};
step('bundled');

// 2. The app's static server, on two origins.
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };
const files = { '/': 'index.html', '/index.html': 'index.html', '/page.js': 'page.js' };
const serve = (port) => new Promise((resolve, reject) => {
  const server = createServer((req, res) => {
    const name = files[new URL(req.url, 'http://x').pathname];
    if (!name) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': types[extname(name)], 'cache-control': 'no-store' });
    res.end(readFileSync(join(site, name)));
  });
  server.once('error', reject);
  server.listen(port, '127.0.0.1', () => resolve(server));
});
const servers = [await serve(pagePort), await serve(otherPort)];
step('served');

const { context, page: first, close } = await launch({
  // the microphone plays the speech file (and then over again: it ends in silence)
  microphone: { file: micWav },
  // the SDK's <audio> and the page's AudioContext play without a click
  autoplay: true,
  // WebRTC host candidates as addresses, not mDNS names, on loopback
  addressCandidates: true,
  viewport: { width: 900, height: 700 },
});

const cleanup = async () => {
  await close();
  for (const s of servers) s.close();
  rmSync(work, { recursive: true, force: true });
};

const query = new URLSearchParams({ relay: relayUrl, calls: callsUrl, token }).toString();
let page;
try {
  // 3. The app on its listed origin.
  page = first;
  const problems = [];
  watchErrors(page, problems);
  const sessionAnswers = [];
  page.on('response', (r) => {
    if (r.url().startsWith(`${relayUrl}/api/session`)) sessionAnswers.push(`${r.request().method()} ${r.status()}`);
  });
  await page.goto(`http://127.0.0.1:${pagePort}/?${query}`, { waitUntil: 'load' });
  await page.waitForFunction(() => window.sdkTest?.connect, null, { timeout: wait });
  step('page loaded');

  // connect: the key from the relay, the offer to the simulator
  const conn = await page.evaluate(() => window.sdkTest.connect());
  result.call_id = conn.callId;
  result.key_ms = conn.keyMs;
  result.connect_ms = conn.connectMs;
  result.relay_answers = sessionAnswers;
  step('connected');

  // the greeting: sound on the remote track, and its transcript
  await page.waitForFunction(() => window.sdkTest.seen.firstAudioAt !== null, null, { timeout: wait });
  result.greeting_audio_ms = await page.evaluate((t0) => window.sdkTest.seen.firstAudioAt - t0, conn.startedAt);
  await page.waitForFunction(() => window.sdkTest.seen.transcripts.some((t) => t.startsWith('Hello')), null, { timeout: wait });
  step('greeting heard');

  // the caller's question (the fake microphone) makes the model call the page's tool; then
  // it reads the answer back
  await page.waitForFunction(() => window.sdkTest.seen.toolRuns.length > 0, null, { timeout: wait });
  await page.evaluate(() => window.sdkTest.markAudio('answer'));
  await page.waitForFunction(() => window.sdkTest.seen.audioAfter.answer !== null, null, { timeout: wait });
  step('tool ran, answer heard');
  await page.screenshot({ path: join(artifacts, 'sdk-talking.png') });

  // interrupt the answer while it plays: the SDK cancels the response and clears the output
  // buffer (the answer takes some 20 s to say)
  const before = await page.evaluate(() => window.sdkTest.seen.events.length);
  result.playing_when_interrupted = await page.evaluate(() => {
    const e = window.sdkTest.seen.events;
    return e.lastIndexOf('output_audio_buffer.started') > e.lastIndexOf('output_audio_buffer.stopped');
  });
  await page.evaluate(() => window.sdkTest.interrupt());
  await page.waitForFunction(
    (n) => window.sdkTest.seen.events.slice(n).some((t) => t === 'output_audio_buffer.cleared' || t === 'response.done'),
    before, { timeout: wait },
  );
  result.after_interrupt = await page.evaluate((n) => window.sdkTest.seen.events.slice(n), before);
  step('interrupted');

  result.mute = await page.evaluate(() => window.sdkTest.mute(true));
  step('muted');

  result.closed_status = await page.evaluate(() => window.sdkTest.close());
  await page.waitForFunction(() => window.sdkTest.seen.states.at(-1) === 'disconnected', null, { timeout: wait });
  step('closed');

  const seen = await page.evaluate(() => window.sdkTest.seen);
  result.errors = seen.errors;
  result.tool_runs = seen.toolRuns.map((r) => r.day);
  result.transcripts = seen.transcripts;
  result.states = seen.states;
  result.event_types = [...new Set(seen.events)];
  result.problems = problems;

  // 4. The same app on an origin the relay does not list: no key for it.
  const other = await context.newPage();
  const otherAnswers = [];
  other.on('response', (r) => {
    if (r.url().startsWith(`${relayUrl}/api/session`)) otherAnswers.push(`${r.request().method()} ${r.status()}`);
  });
  await other.goto(`http://127.0.0.1:${otherPort}/?${query}`, { waitUntil: 'load' });
  await other.waitForFunction(() => window.sdkTest?.fetchKey, null, { timeout: wait });
  result.other_origin = await other.evaluate(() => window.sdkTest.fetchKey().then(
    (key) => ({ key: typeof key }),
    (e) => ({ error: `${e.name}: ${e.message}` }),
  ));
  result.other_relay_answers = otherAnswers;
  step('other origin refused');

  console.log(JSON.stringify(result));
  await cleanup();
} catch (e) {
  if (page) {
    await page.screenshot({ path: join(artifacts, 'sdk-failure.png') }).catch(() => {});
    result.seen = await page.evaluate(() => window.sdkTest?.seen).catch(() => null);
  }
  console.error(`sdk test failed after steps [${result.steps.join(', ')}]: ${e.message}`);
  console.error(JSON.stringify(result));
  await cleanup();
  process.exit(1);
}
