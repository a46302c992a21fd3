// voxrelay test call: talk to an agent from the browser. Plain JavaScript and plain WebRTC,
// no SDK: the agent's tools, guardrails and handoffs run on the relay (it attaches to the call
// over the realtime API's sideband), so this page only carries audio and shows events.
//
// The flow: GET /api/session?agent=NAME mints an ephemeral key for that agent; the SDP offer
// goes straight to the realtime API (<openai-base>/v1/realtime/calls) with that key; the call's
// id (the answer's Location) goes to POST /api/calls/web so that the relay attaches to it. The
// admin token, when the relay has one, is read and kept as the dashboard keeps it
// (sessionStorage, sent as a bearer header). Text from the call is only set with textContent.
'use strict';

const TOKEN_KEY = 'voxrelay.admin.token';
const METER_MS = 50;
// an RMS above this on the agent's track counts as hearing it (silence and comfort noise stay
// well below)
const HEARD_RMS = 0.02;

const $ = (id) => document.getElementById(id);
const base = (document.querySelector('meta[name="openai-base"]').content || '').replace(/\/+$/, '');

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  agents: [],
  call: null, // the live call: { pc, dc, mic, audio, timer, ... }
};

class AuthError extends Error {}

async function api(path, opts) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (opts && opts.body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method: (opts && opts.method) || 'GET',
    headers,
    body: opts && opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    cache: 'no-store',
  });
  if (resp.status === 401) throw new AuthError();
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    throw new Error(body && body.error ? body.error.message : `${resp.status} ${resp.statusText}`);
  }
  return body;
}

function toast(text, kind) {
  const t = document.createElement('div');
  t.className = `toast ${kind || ''}`;
  t.setAttribute('role', 'status');
  t.textContent = text;
  $('toasts').append(t);
  setTimeout(() => t.remove(), 6000);
}

// ---------- state and controls ----------

function setState(s, label) {
  const el = $('state');
  el.dataset.state = s;
  el.textContent = label || s;
  const live = s === 'connecting' || s === 'connected';
  $('btn-connect').disabled = live || !state.agents.length || !base;
  $('agent').disabled = live;
  $('btn-hangup').disabled = !live;
  for (const id of ['btn-interrupt', 'btn-mute', 'text', 'btn-send']) $(id).disabled = s !== 'connected';
}

// ---------- transcript ----------

function line(speaker, key) {
  const tl = $('transcript');
  $('transcript-empty').hidden = true;
  let el = key ? tl.querySelector(`[data-key="${CSS.escape(key)}"]`) : null;
  if (!el) {
    el = document.createElement('div');
    el.className = `turn ${speaker} partial`;
    el.setAttribute('data-testid', 'transcript-line');
    el.dataset.speaker = speaker;
    if (key) el.dataset.key = key;
    const who = document.createElement('div');
    who.className = 'turn-who';
    who.textContent = speaker === 'agent' ? 'Agent' : 'You';
    const text = document.createElement('div');
    text.className = 'turn-text';
    el.append(who, text);
    tl.append(el);
  }
  return el;
}

function setLine(speaker, key, text, final) {
  const el = line(speaker, key);
  el.querySelector('.turn-text').textContent = text;
  el.classList.toggle('partial', !final);
  const tl = $('transcript');
  tl.scrollTop = tl.scrollHeight;
}

function chip(text, kind) {
  const el = document.createElement('div');
  el.className = `chip ${kind || ''}`;
  el.setAttribute('data-testid', 'event-chip');
  el.textContent = text;
  $('transcript').append(el);
  $('transcript-empty').hidden = true;
}

// One server event from the data channel. Only what a person follows is shown; the relay
// acts on the rest (tool calls, guardrails) over its own connection.
function onServerEvent(ev) {
  const c = state.call;
  switch (ev.type) {
    case 'conversation.item.input_audio_transcription.completed':
      setLine('caller', ev.item_id, ev.transcript || '', true);
      break;
    case 'response.output_audio_transcript.delta': {
      const prev = c.partial.get(ev.item_id) || '';
      const text = prev + (ev.delta || '');
      c.partial.set(ev.item_id, text);
      setLine('agent', ev.item_id, text, false);
      break;
    }
    case 'response.output_audio_transcript.done':
      c.partial.delete(ev.item_id);
      setLine('agent', ev.item_id, ev.transcript || '', true);
      break;
    case 'output_audio_buffer.started':
      $('agent-level').dataset.speaking = 'true';
      break;
    case 'output_audio_buffer.stopped':
      $('agent-level').dataset.speaking = 'false';
      break;
    case 'output_audio_buffer.cleared':
      // the agent's audio was cut off: by Interrupt, or by the caller speaking over it
      $('agent-level').dataset.speaking = 'false';
      chip('agent interrupted');
      break;
    case 'response.output_item.done':
      if (ev.item && ev.item.type === 'function_call') chip(`tool: ${ev.item.name}`);
      break;
    case 'error':
      chip(`error: ${(ev.error && ev.error.message) || 'unknown'}`, 'error');
      break;
    default:
      break;
  }
}

function send(ev) {
  const c = state.call;
  if (c && c.dc && c.dc.readyState === 'open') c.dc.send(JSON.stringify(ev));
}

// ---------- level meters ----------

function analyser(ctx, stream) {
  const a = ctx.createAnalyser();
  a.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(a);
  return { a, buf: new Float32Array(a.fftSize) };
}

function rms(m) {
  m.a.getFloatTimeDomainData(m.buf);
  let sum = 0;
  for (let i = 0; i < m.buf.length; i += 1) sum += m.buf[i] * m.buf[i];
  return Math.sqrt(sum / m.buf.length);
}

function sampleMeters() {
  const c = state.call;
  if (!c) return;
  // scaled so that speech fills most of the bar
  if (c.micMeter) $('mic-level').value = Math.min(1, rms(c.micMeter) * 4);
  if (c.agentMeter) {
    const level = rms(c.agentMeter);
    $('agent-level').value = Math.min(1, level * 4);
    if (level > HEARD_RMS && c.firstAudioMs === null) {
      c.firstAudioMs = Math.round(performance.now() - c.clickedAt);
      showTiming();
    }
  }
}

function showTiming() {
  const c = state.call;
  const parts = [];
  if (c.connectedMs !== null) parts.push(`connected in ${c.connectedMs} ms`);
  if (c.firstAudioMs !== null) parts.push(`agent heard ${c.firstAudioMs} ms after Connect`);
  const el = $('timing');
  el.textContent = parts.join(' · ');
  if (c.connectedMs !== null) el.dataset.connectedMs = c.connectedMs;
  if (c.firstAudioMs !== null) el.dataset.firstAudioMs = c.firstAudioMs;
}

// ---------- the call ----------

async function connect() {
  const agent = $('agent').value;
  const c = {
    clickedAt: performance.now(), connectedMs: null, firstAudioMs: null, partial: new Map(),
    pc: null, dc: null, mic: null, ctx: null, micMeter: null, agentMeter: null, timer: null,
    over: false, relayId: null,
  };
  state.call = c;
  $('transcript').querySelectorAll('.turn, .chip').forEach((e) => e.remove());
  $('timing').textContent = '';
  delete $('timing').dataset.connectedMs;
  delete $('timing').dataset.firstAudioMs;
  setState('connecting', 'connecting…');
  try {
    // created inside the click, so the browser lets it play
    c.ctx = new AudioContext();
    const key = await api(`/api/session?agent=${encodeURIComponent(agent)}`);
    const ek = key && key.value;
    if (!ek) throw new Error('the relay answered no key');
    c.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    if (c.over) return;
    const pc = new RTCPeerConnection();
    c.pc = pc;
    pc.ontrack = (e) => {
      const stream = e.streams[0] || new MediaStream([e.track]);
      $('remote').srcObject = stream;
      c.agentMeter = analyser(c.ctx, stream);
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === 'connected' && c.connectedMs === null) {
        c.connectedMs = Math.round(performance.now() - c.clickedAt);
        showTiming();
        setState('connected');
      } else if (s === 'failed' || s === 'closed' || s === 'disconnected') {
        hangup(c, 'remote');
      }
    };
    c.mic.getAudioTracks().forEach((t) => pc.addTrack(t, c.mic));
    c.micMeter = analyser(c.ctx, c.mic);
    // the events channel must exist before the offer so that the offer carries it
    const dc = pc.createDataChannel('oai-events');
    c.dc = dc;
    dc.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (ev && typeof ev.type === 'string' && state.call === c) onServerEvent(ev);
    };
    dc.onclose = () => hangup(c, 'remote');
    c.timer = setInterval(sampleMeters, METER_MS);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const resp = await fetch(`${base}/v1/realtime/calls`, {
      method: 'POST',
      body: offer.sdp,
      headers: { Authorization: `Bearer ${ek}`, 'Content-Type': 'application/sdp' },
    });
    if (!resp.ok) throw new Error(`the realtime API refused the call (${resp.status})`);
    const answer = await resp.text();
    const location = resp.headers.get('Location') || '';
    const callId = location.split('?')[0].split('/').filter(Boolean).pop() || '';
    if (!callId) throw new Error('the realtime API named no call (no Location header)');
    if (c.over) return;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    // the relay attaches to the call and runs the agent's tools; without it the call is
    // useless, so a refusal ends it
    const web = await api('/api/calls/web', { method: 'POST', body: { call_id: callId, client_secret: ek } });
    c.relayId = web && web.id;
    if (c.relayId) $('state').dataset.callId = c.relayId;
  } catch (e) {
    if (e instanceof AuthError) { hangup(c, 'failed'); showLogin(true); return; }
    hangup(c, 'failed');
    // kept on the page (a toast goes away): why this attempt failed
    if (state.call === c) $('timing').textContent = `Could not connect: ${e.message}`;
    toast(`Could not connect: ${e.message}`, 'error');
  }
}

function teardown(c) {
  if (c.timer) clearInterval(c.timer);
  if (c.dc) { c.dc.onclose = null; c.dc.close(); }
  if (c.pc) { c.pc.onconnectionstatechange = null; c.pc.close(); }
  if (c.mic) c.mic.getTracks().forEach((t) => t.stop());
  if (c.ctx) c.ctx.close().catch(() => {});
  $('remote').srcObject = null;
  $('mic-level').value = 0;
  $('agent-level').value = 0;
  $('agent-level').dataset.speaking = 'false';
  $('btn-mute').setAttribute('aria-pressed', 'false');
  $('btn-mute').textContent = 'Mute';
}

// Ends the call once; `why` is 'you' (Hang up), 'remote' (the other side ended it) or
// 'failed'.
function hangup(c, why) {
  if (!c || c.over) return;
  c.over = true;
  teardown(c);
  if (state.call !== c) return;
  $('state').dataset.reason = why;
  if (why === 'failed') setState('failed', 'failed');
  else setState('ended', why === 'you' ? 'ended · you hung up' : 'ended');
}

function toggleMute() {
  const c = state.call;
  if (!c || !c.mic) return;
  const muted = $('btn-mute').getAttribute('aria-pressed') !== 'true';
  c.mic.getAudioTracks().forEach((t) => { t.enabled = !muted; });
  $('btn-mute').setAttribute('aria-pressed', String(muted));
  $('btn-mute').textContent = muted ? 'Unmute' : 'Mute';
}

function interrupt() {
  // stop the response, then drop the audio already queued for playback (WebRTC only)
  send({ type: 'response.cancel' });
  send({ type: 'output_audio_buffer.clear' });
}

function sendText(e) {
  e.preventDefault();
  const text = $('text').value.trim();
  if (!text || !state.call) return;
  send({
    type: 'conversation.item.create',
    item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] },
  });
  send({ type: 'response.create' });
  setLine('caller', null, text, true);
  $('text').value = '';
}

// ---------- agents and sign-in ----------

function showAgent() {
  const a = state.agents.find((x) => x.name === $('agent').value);
  $('agent-desc').textContent = (a && a.description) || '';
}

async function start() {
  try {
    state.agents = await api('/api/agents');
    $('login').hidden = true;
  } catch (e) {
    if (e instanceof AuthError) { showLogin(!!state.token); return; }
    toast(`Could not list the agents: ${e.message}`, 'error');
    state.agents = [];
  }
  const sel = $('agent');
  sel.replaceChildren(...state.agents.map((a) => {
    const o = document.createElement('option');
    o.value = a.name;
    o.textContent = a.default ? `${a.name} (default)` : a.name;
    o.selected = !!a.default;
    return o;
  }));
  showAgent();
  if (!state.agents.length) $('agent-desc').textContent = 'This relay has no realtime agents to talk to.';
  else if (!base) $('agent-desc').textContent = 'This relay has no OpenAI API key, so it cannot place a call.';
  setState('idle');
}

function showLogin(failed) {
  $('login').hidden = false;
  $('login-error').hidden = !(failed && state.token);
  $('token').focus();
}

document.addEventListener('DOMContentLoaded', () => {
  $('btn-connect').addEventListener('click', connect);
  $('btn-hangup').addEventListener('click', () => hangup(state.call, 'you'));
  $('btn-interrupt').addEventListener('click', interrupt);
  $('btn-mute').addEventListener('click', toggleMute);
  $('text-form').addEventListener('submit', sendText);
  $('agent').addEventListener('change', showAgent);
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    state.token = $('token').value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    start();
  });
  // leaving the page hangs up rather than leaving the call to time out
  window.addEventListener('pagehide', () => hangup(state.call, 'you'));
  setState('idle');
  start();
});
