// What the browser scripts share: the system's Chromium launched headless with a profile of its
// own, the settings every script reads from its environment, watching a page for errors and for
// requests to other origins, and signing in to the admin pages.
//
// Environment read here: CHROMIUM (default /usr/bin/chromium), ARTIFACT_DIR (where screenshots
// go, created; default .), WAIT_MS (how long each step may take; each script has its default).

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/**
 * The environment variables `names`, all required: a script without one of them exits 2 with
 * what is missing (the Rust test sets them all).
 * @param {...string} names
 * @returns {string[]} their values, in order
 */
export function required(...names) {
  const missing = names.filter((k) => !process.env[k]);
  if (missing.length) {
    console.error(`${missing.join(' and ')} must be set`);
    process.exit(2);
  }
  return names.map((k) => process.env[k]);
}

/**
 * The settings every script has: where the screenshots go (the folder is created) and how long
 * each step may take.
 * @param {number} defaultWaitMs WAIT_MS when it is not set
 * @returns {{artifacts: string, wait: number}}
 */
export function settings(defaultWaitMs = 30000) {
  const artifacts = process.env.ARTIFACT_DIR || '.';
  mkdirSync(artifacts, { recursive: true });
  return { artifacts, wait: Number(process.env.WAIT_MS || defaultWaitMs) };
}

/**
 * Launches the system's Chromium (CHROMIUM) headless with a new profile in a temporary folder.
 *
 * @param {object} [opts]
 * @param {{width: number, height: number}} [opts.viewport] default 1440x900
 * @param {{file: string, loop?: boolean, origin?: string}} [opts.microphone] a fake microphone
 *   playing `file` (a WAV; over and over unless `loop` is false), allowed without a prompt, and
 *   granted to `origin` when given
 * @param {boolean} [opts.autoplay] media plays without a user gesture
 * @param {boolean} [opts.addressCandidates] WebRTC host candidates as addresses, not mDNS names
 *   (needed for a call on loopback)
 * @returns {Promise<{context: import('playwright-core').BrowserContext,
 *   page: import('playwright-core').Page, close: () => Promise<void>}>} the context, its first
 *   page, and `close()`, which closes the browser and removes the profile (and never throws)
 */
export async function launch(opts = {}) {
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ];
  const mic = opts.microphone;
  if (mic) {
    const loop = mic.loop === false ? '%noloop' : '';
    args.push(
      // a microphone the page may use without asking, playing the file
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${mic.file}${loop}`,
    );
  }
  if (opts.autoplay) args.push('--autoplay-policy=no-user-gesture-required');
  if (opts.addressCandidates) args.push('--disable-features=WebRtcHideLocalIpsWithMdns');
  const profile = mkdtempSync(join(tmpdir(), 'voxrelay-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
    viewport: opts.viewport || { width: 1440, height: 900 },
  });
  if (mic && mic.origin) await context.grantPermissions(['microphone'], { origin: mic.origin });
  const page = context.pages()[0] || await context.newPage();
  const close = async () => {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, close };
}

/**
 * Adds the page's console errors and uncaught errors to `problems`, as `[label: ]console
 * error: …` and `[label: ]page error: …`.
 * @param {import('playwright-core').Page} page
 * @param {string[]} problems
 * @param {{label?: string, ignore?: (text: string) => boolean}} [opts] `ignore` passes over a
 *   console error that is expected at the time (asked when it is logged)
 */
export function watchErrors(page, problems, opts = {}) {
  const prefix = opts.label ? `${opts.label}: ` : '';
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (opts.ignore && opts.ignore(m.text())) return;
    problems.push(`${prefix}console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${prefix}page error: ${e.message}`));
}

/**
 * Adds each request the page makes outside `origin` (data: URLs aside) to `problems`, as
 * `[label: ]request to another origin: …`, unless `allow(url)` says it may go there.
 * @param {import('playwright-core').Page} page
 * @param {string} origin
 * @param {string[]} problems
 * @param {{label?: string, allow?: (url: string) => boolean}} [opts]
 */
export function watchRequests(page, origin, problems, opts = {}) {
  const prefix = opts.label ? `${opts.label}: ` : '';
  page.on('request', (r) => {
    const u = r.url();
    if (u.startsWith(origin) || u.startsWith('data:')) return;
    if (opts.allow && opts.allow(u)) return;
    problems.push(`${prefix}request to another origin: ${u}`);
  });
}

/**
 * Signs in to an admin page (the dashboard or /talk) with the admin token, waiting at most
 * `wait` ms for each step.
 * @param {import('playwright-core').Page} page
 * @param {string} token
 * @param {number} wait
 */
export async function signIn(page, token, wait) {
  await page.getByTestId('token').waitFor({ state: 'visible', timeout: wait });
  await page.getByTestId('token').fill(token);
  await page.getByTestId('sign-in').click();
  await page.locator('#login').waitFor({ state: 'hidden', timeout: wait });
}
