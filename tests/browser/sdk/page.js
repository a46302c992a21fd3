// A browser voice app as the Agents SDK's docs build one: the app's server (here the relay's
// GET /api/session, on another origin) hands out an ephemeral key, and the page runs a
// RealtimeSession over WebRTC straight to the Realtime API (here the simulator, through the
// transport's baseUrl) with a tool of its own. tests/browser/sdk.mjs bundles it with esbuild and
// drives it through `window.sdkTest`.
//
// Query parameters: relay (the relay's admin base URL), calls (the Realtime API's
// /v1/realtime/calls URL), token (the relay's admin token, optional).

import {
  OpenAIRealtimeWebRTC,
  RealtimeAgent,
  RealtimeSession,
  tool,
} from '@openai/agents-realtime';
import { z } from 'zod';

const params = new URLSearchParams(location.search);
const relay = params.get('relay');
const callsUrl = params.get('calls');
const token = params.get('token') || '';

const stateEl = document.getElementById('state');
const transcriptEl = document.getElementById('transcript');
const started = performance.now();
const now = () => Math.round(performance.now() - started);

// What the page saw, read by the test script.
const seen = {
  events: [], // server event types, in order
  errors: [], // the session's `error` events
  toolRuns: [], // the tool's arguments, each time it ran
  transcripts: [], // assistant transcripts, as the SDK's history has them
  states: [], // connection_change
  interrupted: 0, // audio_interrupted events
  firstAudioAt: null, // ms since load when the remote track first carried sound
  audioAfter: {}, // label -> ms when sound was heard after `markAudio(label)`
  level: 0, // the remote track's current peak (0..1)
};
window.sdkTest = { seen };

/** The page's own tool: the model calls it, the SDK runs it here, in the browser. */
const getOpeningHours = tool({
  name: 'get_opening_hours',
  description: 'The clinic opening hours on a day of the week.',
  parameters: z.object({ day: z.string() }),
  execute: async ({ day }) => {
    seen.toolRuns.push({ day, at: now() });
    return JSON.stringify({ day, hours: '8:00 to 17:00' });
  },
});

const agent = new RealtimeAgent({
  name: 'Receptionist',
  instructions: 'You are the clinic receptionist. Use get_opening_hours for opening hours.',
  tools: [getOpeningHours],
});

/** Watches the remote audio track: when it first carries sound, and its level. */
function watchRemote(stream) {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let peak = 0;
    for (const v of buf) peak = Math.max(peak, Math.abs(v));
    seen.level = peak;
    if (peak > 0.02) {
      if (seen.firstAudioAt === null) seen.firstAudioAt = now();
      for (const [label, at] of Object.entries(seen.audioAfter)) {
        if (at === null) seen.audioAfter[label] = now();
      }
    }
  }, 10);
  return () => {
    clearInterval(timer);
    ctx.close();
  };
}

let stopWatching = () => {};
const transport = new OpenAIRealtimeWebRTC({
  baseUrl: callsUrl,
  changePeerConnection: async (pc) => {
    pc.addEventListener('track', (e) => {
      stopWatching = watchRemote(e.streams[0]);
    });
    return pc;
  },
});
const session = new RealtimeSession(agent, { transport, model: 'gpt-realtime' });

session.on('transport_event', (e) => seen.events.push(e.type));
session.on('error', (e) => seen.errors.push(String(e.error?.message ?? e.error?.error?.message ?? JSON.stringify(e.error))));
session.on('audio_interrupted', () => { seen.interrupted += 1; });
session.on('history_updated', (history) => {
  seen.transcripts = history
    .filter((i) => i.type === 'message' && i.role === 'assistant')
    .map((i) => i.content.map((c) => c.transcript ?? c.text ?? '').join(''));
  transcriptEl.replaceChildren(...seen.transcripts.map((t) => {
    const li = document.createElement('li');
    li.textContent = t;
    return li;
  }));
});
transport.on('connection_change', (s) => {
  seen.states.push(s);
  stateEl.textContent = s;
});

/** Asks the app's server (the relay) for an ephemeral key. */
async function fetchKey() {
  const resp = await fetch(`${relay}/api/session`, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  if (!resp.ok) throw new Error(`/api/session answered ${resp.status}`);
  return (await resp.json()).value;
}

Object.assign(window.sdkTest, {
  fetchKey,
  /** Gets a key and connects; the times it took. */
  async connect() {
    const t0 = now();
    const apiKey = await fetchKey();
    const keyMs = now() - t0;
    await session.connect({ apiKey });
    const connectMs = now() - t0;
    // the agent speaks first: the model says nothing until asked for a response
    transport.sendEvent({ type: 'response.create' });
    return { startedAt: t0, keyMs, connectMs, callId: transport.callId };
  },
  /** Notes the next moment the remote track carries sound, under `label`. */
  markAudio(label) {
    seen.audioAfter[label] = null;
  },
  interrupt() {
    session.interrupt();
  },
  /** Mutes the microphone; what the SDK and the outgoing track say. */
  mute(muted) {
    session.mute(muted);
    const senders = transport.connectionState.peerConnection.getSenders();
    return {
      muted: session.muted,
      tracksEnabled: senders.filter((s) => s.track).map((s) => s.track.enabled),
    };
  },
  close() {
    session.close();
    stopWatching();
    return transport.status;
  },
});
