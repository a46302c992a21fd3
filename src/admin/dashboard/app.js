// voxrelay operator dashboard: plain JavaScript, no dependencies.
//
// Live events come from GET /api/events read with fetch() and a small Server-Sent Events
// parser rather than EventSource: EventSource cannot send an Authorization header, and a
// token in the URL would end up in access logs and browser history. For the same reason a
// call's recording is fetched with the token and played from a blob: URL. Text from calls is
// only ever set with textContent, never parsed as HTML.
'use strict';

const TOKEN_KEY = 'voxrelay.admin.token';
const BOOKINGS_REFRESH_MS = 30000;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  live: new Map(),      // id -> CallSummary
  recent: [],           // CallSummary[], newest first
  selected: null,       // id
  detail: null,         // CallDetail of the selected call
  pending: [],          // events for the selected call that came before its detail
  stream: null,         // AbortController of the event stream
  retryMs: 500,
  day: localDate(new Date()),
  player: { id: null, url: null }, // the call whose recording the player holds
  cluster: null,        // {node_id, relays} when this relay is one of a cluster
};

const $ = (id) => document.getElementById(id);

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function localDate(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

function clock(iso) {
  if (!iso) return '';
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const m = Math.floor(s / 60);
  const hh = Math.floor(m / 60);
  const p = (n) => String(n).padStart(2, '0');
  return hh > 0 ? `${hh}:${p(m % 60)}:${p(s % 60)}` : `${m}:${p(s % 60)}`;
}

function callLength(c) {
  const start = new Date(c.answered_at || c.started_at).getTime();
  const end = c.ended_at ? new Date(c.ended_at).getTime() : Date.now();
  return duration(end - start);
}

// A SIP URI or number as people read it: the user part of `sip:+1555@host`.
function party(uri) {
  if (!uri) return 'unknown';
  const m = /^(?:.*<)?sips?:([^@;>]+)/.exec(uri);
  return m ? decodeURIComponent(m[1]) : uri;
}

// Who called: a phone number, or "Browser" for a call from a web page (kind "web"; a relay
// older than call kinds sends no kind, and its calls are phone calls).
function caller(c) {
  return c.kind === 'web' ? 'Browser' : party(c.from);
}

const STATE_LABEL = { ringing: 'Ringing', answered: 'In call', ended: 'Ended' };
// on a call the relay placed: who answered, as answering-machine detection found
const ANSWERED_BY = { person: 'a person answered', machine: 'a voicemail answered', silent: 'no one spoke', unsure: 'answerer unclear' };

function toast(text, kind) {
  const t = h('div', { class: `toast ${kind || ''}`, role: 'status', text });
  $('toasts').append(t);
  setTimeout(() => t.remove(), 5000);
}

// ---------- API ----------

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
    const msg = body && body.error ? body.error.message : `${resp.status} ${resp.statusText}`;
    const err = new Error(msg);
    err.code = body && body.error ? body.error.code : String(resp.status);
    throw err;
  }
  return body;
}

// Reads a Server-Sent Events response and calls onEvent(name, data) per event.
async function readEvents(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'event') name = val;
        else if (field === 'data') data.push(val);
      }
      if (data.length) {
        let parsed = null;
        try { parsed = JSON.parse(data.join('\n')); } catch (e) { continue; }
        onEvent(name, parsed);
      }
    }
  }
}

async function streamEvents() {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  setConn('connecting');
  try {
    const headers = { Accept: 'text/event-stream' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const resp = await fetch('/api/events', { headers, signal: ctl.signal, cache: 'no-store' });
    if (resp.status === 401) throw new AuthError();
    if (!resp.ok) throw new Error(`event stream: ${resp.status}`);
    setConn('live');
    state.retryMs = 500;
    await readEvents(resp, onEvent);
  } catch (e) {
    if (ctl.signal.aborted) return;
    if (e instanceof AuthError) { showLogin(true); return; }
  }
  if (ctl.signal.aborted) return;
  // the stream ended (server restart, or we were too slow and got dropped): catch up, retry
  setConn('reconnecting');
  setTimeout(() => { if (state.stream === ctl) start(); }, state.retryMs);
  state.retryMs = Math.min(state.retryMs * 2, 10000);
}

function setConn(s) {
  const el = $('conn');
  el.dataset.state = s;
  el.textContent = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' }[s];
}

// ---------- events ----------

function onEvent(name, ev) {
  switch (name) {
    case 'snapshot':
      // in a cluster each relay sends its own snapshot (marked with its node), and an empty
      // one when it goes away: it replaces that relay's calls only
      if (ev.node) {
        for (const [id, c] of state.live) if (c.node === ev.node) state.live.delete(id);
        for (const c of ev.calls || []) state.live.set(c.id, { ...c, node: ev.node });
      } else {
        state.live = new Map((ev.calls || []).map((c) => [c.id, c]));
      }
      renderLists();
      return;
    case 'dropped':
      toast('Live updates fell behind; catching up.');
      return;
    case 'started':
      state.live.set(ev.call.id, ev.node ? { ...ev.call, node: ev.node } : ev.call);
      renderLists();
      if (!state.selected) select(ev.call.id);
      break;
    case 'answered':
      patchSummary(ev.call_id, { state: 'answered', answered_at: ev.at });
      break;
    case 'ended': {
      const c = state.live.get(ev.call_id);
      state.live.delete(ev.call_id);
      if (c) {
        state.recent = [{ ...c, state: 'ended', ended_at: ev.at, end_reason: ev.reason },
          ...state.recent.filter((r) => r.id !== c.id)];
      }
      renderLists();
      break;
    }
    case 'muted':
      patchSummary(ev.call_id, { muted: ev.muted });
      break;
    case 'transcript': {
      const c = state.live.get(ev.call_id);
      if (c && ev.index + 1 > c.turns) patchSummary(ev.call_id, { turns: ev.index + 1 });
      break;
    }
    case 'tool_result':
      if (ev.ok && ev.name === 'create_booking') loadBookings();
      break;
    default:
      break;
  }
  if (ev.call_id && ev.call_id === state.selected) {
    if (state.detail) applyToDetail(ev); else state.pending.push(ev);
  }
}

function patchSummary(id, patch) {
  const c = state.live.get(id);
  if (c) Object.assign(c, patch);
  renderLists();
}

// Applies one event to the selected call's detail; transcript events carry the line's
// index, so seeing an event twice (snapshot plus stream) changes nothing.
function applyToDetail(ev) {
  const d = state.detail;
  switch (ev.type) {
    case 'answered': d.state = 'answered'; d.answered_at = ev.at; break;
    case 'ended':
      d.state = 'ended'; d.ended_at = ev.at; d.end_reason = ev.reason;
      d.transcript.forEach((t) => { t.final = true; });
      // the recording is named in the record once the call has ended
      refreshRecording(d.id);
      break;
    case 'transcript': d.transcript[ev.index] = ev.turn; break;
    case 'tool_call':
      if (!d.tool_calls.some((t) => t.call_id === ev.tool_call_id)) {
        d.tool_calls.push({ call_id: ev.tool_call_id, name: ev.name, arguments: ev.arguments,
          result: null, ok: false, at_ms: Date.now() - new Date(d.started_at).getTime(), duration_ms: null });
      }
      break;
    case 'tool_result': {
      const t = d.tool_calls.find((x) => x.call_id === ev.tool_call_id);
      if (t) Object.assign(t, { result: ev.result, ok: ev.ok, duration_ms: ev.duration_ms });
      break;
    }
    case 'barge_in':
      d.barge_ins = d.barge_ins || [];
      d.barge_ins.push({ at_ms: new Date(ev.at).getTime() - new Date(d.started_at).getTime(), residual_ms: ev.residual_ms });
      break;
    case 'muted': d.muted = ev.muted; break;
    case 'answered_by': d.answered_by = ev.answered_by; break;
    case 'handoff': d.agent = ev.to; break;
    case 'media': d.media = ev.stats; break;
    // a browser call's recording, uploaded by its page after the call ended
    case 'recording': d.recording = ev.recording; break;
    default: break;
  }
  renderDetail();
}

// ---------- rendering ----------

// In a cluster: which relay this page is on and how many relays answer.
function renderCluster(nodes) {
  const el = $('cluster');
  if (!el) return;
  el.hidden = !state.cluster;
  if (!state.cluster) return;
  const all = nodes || [];
  const up = all.filter((n) => n.alive && n.reachable).length;
  el.textContent = `${state.cluster.node_id} · ${up} of ${all.length} relays`;
  el.title = all.map((n) => `${n.node_id}: ${n.alive ? (n.draining ? 'draining' : 'up') : 'gone'}${n.reachable ? '' : ' (not answering)'} · ${n.live_calls} calls`).join('\n');
}

// The cluster's relays change without events of their own: refresh the line now and then.
async function refreshCluster() {
  if (!state.cluster || !$('login').hidden) return;
  try {
    const live = await api('/api/calls');
    renderCluster(live.nodes);
  } catch (e) {
    if (e instanceof AuthError) showLogin(true);
  }
}

function callItem(c) {
  const active = c.id === state.selected;
  return h('li', {},
    h('button', {
      class: `call-item${active ? ' active' : ''}`, 'data-testid': 'call-item', 'data-call-id': c.id,
      'data-state': c.state, 'data-kind': c.kind || 'phone', 'data-node': c.node, 'aria-pressed': active ? 'true' : 'false', onclick: () => select(c.id),
    },
    h('span', { class: `dot ${c.state}`, 'aria-hidden': 'true' }),
    h('span', { class: 'call-item-main' },
      h('span', { class: 'call-item-from' }, caller(c), c.kind === 'web' ? h('span', { class: 'kind', text: 'web' }) : null),
      h('span', { class: 'call-item-sub', text: `${c.agent} · ${c.state === 'ended' ? (c.end_reason || 'ended') : STATE_LABEL[c.state]}${c.muted ? ' · muted' : ''}${state.cluster && c.node ? ` · ${c.node}` : ''}` })),
    h('span', { class: 'call-item-time', 'data-timer': c.state === 'ended' ? null : c.id,
      text: c.state === 'ended' ? clock(c.started_at) : callLength(c) })));
}

function renderLists() {
  const live = [...state.live.values()].sort((a, b) => a.started_at.localeCompare(b.started_at));
  $('live-calls').replaceChildren(...live.map(callItem));
  $('live-empty').hidden = live.length > 0;
  $('recent-calls').replaceChildren(...state.recent.slice(0, 50).map(callItem));
  $('recent-empty').hidden = state.recent.length > 0;
  $('live-count').textContent = `${live.length} live`;
  $('live-count').classList.toggle('on', live.length > 0);
}

function turnEl(t, i, rec) {
  const who = { caller: 'Caller', agent: 'Agent', keypad: 'Keypad', operator: 'Operator' }[t.speaker] || t.speaker;
  // with a recording, a line plays the call from its moment (at_ms counts from the call's
  // start, the recording from its offset_ms)
  const at = rec ? Math.max(0, (t.at_ms - rec.offset_ms) / 1000) : null;
  return h('div', {
    class: `turn ${t.speaker}${t.final ? '' : ' partial'}${t.cut_off ? ' cut' : ''}${rec ? ' seekable' : ''}`,
    'data-testid': 'transcript-line', 'data-index': i, 'data-speaker': t.speaker,
    'data-seek': rec ? at.toFixed(3) : null,
    title: rec ? 'Play the recording from here' : null,
    onclick: rec ? () => seek(at) : null,
  },
  h('div', { class: 'turn-who' }, who, h('span', { class: 'turn-at', text: duration(t.at_ms) })),
  h('div', { class: 'turn-text', text: t.text || '…' }),
  t.cut_off ? h('div', { class: 'turn-note', text: 'interrupted' }) : null);
}

function toolEl(t) {
  const status = t.duration_ms === null ? 'running' : (t.ok ? `ok · ${t.duration_ms} ms` : `error · ${t.duration_ms} ms`);
  return h('details', { class: `tool ${t.duration_ms === null ? 'running' : (t.ok ? 'ok' : 'error')}`, 'data-testid': 'tool-call' },
    h('summary', {}, h('span', { class: 'tool-name', text: t.name }), h('span', { class: 'tool-status', text: status })),
    h('div', { class: 'tool-body' },
      h('div', { class: 'tool-label', text: 'Arguments' }),
      h('pre', { text: JSON.stringify(t.arguments, null, 2) }),
      h('div', { class: 'tool-label', text: 'Result' }),
      h('pre', { text: t.result === null ? '…' : JSON.stringify(t.result, null, 2) })));
}

function renderDetail() {
  const d = state.detail;
  $('call-placeholder').hidden = !!d;
  $('call-view').hidden = !d;
  if (!d) return;
  $('call-title').textContent = d.kind === 'web' ? `Web call · ${d.agent}` : `${party(d.from)} → ${party(d.to)}`;
  $('call-title').dataset.kind = d.kind || 'phone';
  $('call-meta').textContent = [
    d.kind === 'web' ? 'from the browser' : null, state.cluster && d.node ? `on ${d.node}` : null, `agent ${d.agent}`, d.trunk ? `trunk ${d.trunk}` : null, d.transport !== 'unknown' ? d.transport.toUpperCase() : null,
    `started ${clock(d.started_at)}`, d.ended_at ? `ended ${clock(d.ended_at)}` : null,
    d.answered_by ? ANSWERED_BY[d.answered_by] || `answered by: ${d.answered_by}` : null,
  ].filter(Boolean).join(' · ');
  const st = $('call-state');
  st.textContent = d.state === 'ended' ? `Ended · ${d.end_reason || 'other'}` : (STATE_LABEL[d.state] + (d.muted ? ' · muted' : ''));
  st.className = `badge ${d.state}`;
  st.dataset.state = d.state;
  $('call-timer').textContent = callLength(d);
  $('call-timer').dataset.timer = d.state === 'ended' ? '' : d.id;
  const over = d.state === 'ended';
  for (const id of ['btn-hangup', 'btn-interrupt', 'btn-mute', 'btn-say', 'say-text']) $(id).disabled = over;
  $('btn-mute').textContent = d.muted ? 'Unmute caller' : 'Mute caller';
  $('btn-mute').classList.toggle('on', !!d.muted);

  // transcript lines and tool calls, in time order
  const rec = d.recording && !d.recording.deleted_at ? d.recording : null;
  renderRecording(d);
  const items = d.transcript.map((t, i) => ({ at: t.at_ms, el: () => turnEl(t, i, rec) }))
    .concat(d.tool_calls.map((t) => ({ at: t.at_ms, el: () => toolEl(t) })))
    .concat((d.barge_ins || []).map((b) => ({ at: b.at_ms, el: () => h('div', { class: 'event-chip', text: `caller interrupted · ${b.residual_ms} ms heard after` }) })));
  items.sort((a, b) => a.at - b.at);
  const tl = $('timeline');
  const atBottom = tl.scrollHeight - tl.scrollTop - tl.clientHeight < 40;
  // keep open tool details open across re-renders
  const open = new Set([...tl.querySelectorAll('details[open] .tool-name')].map((e) => e.textContent));
  tl.replaceChildren(...(items.length ? items.map((x) => x.el())
    : [h('p', { class: 'empty', text: over ? 'Nothing was said on this call.' : 'Waiting for the first words…' })]));
  tl.querySelectorAll('details').forEach((e) => { if (open.has(e.querySelector('.tool-name').textContent)) e.open = true; });
  if (atBottom) tl.scrollTop = tl.scrollHeight;

  const m = d.media || {};
  $('media').replaceChildren(...[
    ['Codec', m.codec || '–'], ['Packets in / out', `${m.rtp_in || 0} / ${m.rtp_out || 0}`],
    ['Lost', m.lost || 0], ['Jitter', `${(m.jitter_ms || 0).toFixed(1)} ms`],
    ['Buffer', `${m.jitter_buffer_ms || 0} ms`], ['Concealed', m.concealed_frames || 0],
    ['Barge-ins', m.barge_ins || 0],
  ].map(([k, v]) => h('div', { class: 'stat' }, h('span', { class: 'stat-k', text: k }), h('span', { class: 'stat-v', text: String(v) }))));
}

// The recording beside the transcript: fetched once per call (with the token), played from
// a blob: URL.
function renderRecording(d) {
  const box = $('recording');
  const player = $('player');
  const rec = d.recording;
  box.hidden = !rec;
  if (!rec) { clearPlayer(); return; }
  if (rec.deleted_at) {
    clearPlayer();
    player.hidden = true;
    $('recording-meta').textContent = `deleted ${new Date(rec.deleted_at).toLocaleDateString()} (retention)`;
    return;
  }
  player.hidden = false;
  $('recording-meta').textContent = `${duration(rec.duration_ms)} · ${(rec.bytes / 1e6).toFixed(1)} MB`;
  if (state.player.id === d.id) return;
  clearPlayer();
  state.player.id = d.id;
  loadRecording(d.id);
}

async function refreshRecording(id) {
  try {
    const d = await api(`/api/calls/${encodeURIComponent(id)}`);
    if (!state.detail || state.detail.id !== id || !d.recording) return;
    state.detail.recording = d.recording;
    renderDetail();
  } catch (e) {
    if (e instanceof AuthError) showLogin(true);
  }
}

function clearPlayer() {
  const player = $('player');
  if (state.player.url) URL.revokeObjectURL(state.player.url);
  state.player = { id: null, url: null };
  player.removeAttribute('src');
  player.load();
}

async function loadRecording(id) {
  try {
    const headers = { Accept: 'audio/wav' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const resp = await fetch(`/api/calls/${encodeURIComponent(id)}/recording`, { headers, cache: 'no-store' });
    if (resp.status === 401) throw new AuthError();
    if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
    const blob = await resp.blob();
    if (state.player.id !== id) return;
    state.player.url = URL.createObjectURL(blob);
    $('player').src = state.player.url;
  } catch (e) {
    if (e instanceof AuthError) { showLogin(true); return; }
    if (state.player.id === id) toast(`Could not load the recording: ${e.message}`, 'error');
  }
}

function seek(seconds) {
  const player = $('player');
  if (!player.src) return;
  player.currentTime = seconds;
  player.play().catch(() => {});
}

function tick() {
  document.querySelectorAll('[data-timer]').forEach((el) => {
    const id = el.dataset.timer;
    if (!id) return;
    const c = state.live.get(id) || (state.detail && state.detail.id === id ? state.detail : null);
    if (c && c.state !== 'ended') el.textContent = callLength(c);
  });
}

// ---------- actions ----------

async function select(id) {
  state.selected = id;
  state.detail = null;
  state.pending = [];
  renderLists();
  try {
    const d = await api(`/api/calls/${encodeURIComponent(id)}`);
    if (state.selected !== id) return;
    state.detail = d;
    const pending = state.pending;
    state.pending = [];
    pending.forEach(applyToDetail);
    renderDetail();
  } catch (e) {
    if (e instanceof AuthError) { showLogin(true); return; }
    toast(`Could not load the call: ${e.message}`, 'error');
  }
}

async function control(action, body) {
  const d = state.detail;
  if (!d) return;
  try {
    // every POST is JSON: the server refuses other bodies (a page elsewhere can send those)
    await api(`/api/calls/${encodeURIComponent(d.id)}/${action}`, { method: 'POST', body: body === undefined ? {} : body });
    return true;
  } catch (e) {
    if (e instanceof AuthError) { showLogin(true); return false; }
    toast(e.code === 'call_ended' ? 'The call has already ended.' : `${action}: ${e.message}`, 'error');
    return false;
  }
}

async function loadBookings() {
  const day = state.day;
  const today = localDate(new Date());
  $('bookings-title').textContent = day === today ? "Today's bookings"
    : `Bookings · ${new Date(`${day}T12:00:00`).toLocaleDateString([], { weekday: 'short', day: 'numeric', month: 'short' })}`;
  $('day').value = day;
  try {
    const r = await api(`/api/bookings?date=${day}`);
    if (day !== state.day) return;
    $('bookings').replaceChildren(...r.bookings.map((b) => h('li', { class: `booking ${b.status}`, 'data-testid': 'booking' },
      h('span', { class: 'booking-time', text: b.time.slice(0, 5) }),
      h('span', { class: 'booking-main' },
        h('span', { class: 'booking-name', text: b.patient_name }),
        h('span', { class: 'booking-sub', text: `${b.phone} · ${b.code}` })),
      b.status === 'cancelled' ? h('span', { class: 'tag', text: 'cancelled' }) : null)));
    $('bookings-empty').hidden = r.bookings.length > 0;
    $('bookings-empty').textContent = 'No bookings on this day.';
  } catch (e) {
    if (e instanceof AuthError) { showLogin(true); return; }
    $('bookings').replaceChildren();
    $('bookings-empty').hidden = false;
    $('bookings-empty').textContent = `Bookings unavailable: ${e.message}`;
  }
}

function shiftDay(n) {
  const d = new Date(`${state.day}T12:00:00`);
  d.setDate(d.getDate() + n);
  state.day = localDate(d);
  loadBookings();
}

function showLogin(failed) {
  if (state.stream) { state.stream.abort(); state.stream = null; }
  $('login').hidden = false;
  $('login-error').hidden = !(failed && state.token);
  $('token').focus();
}

async function start() {
  try {
    const [live, ended, cluster] = await Promise.all([api('/api/calls'), api('/api/calls?state=ended'),
      api('/api/cluster').catch(() => null)]);
    state.cluster = cluster && cluster.node_id ? cluster : null;
    renderCluster(live.nodes);
    state.live = new Map(live.calls.map((c) => [c.id, c]));
    state.recent = ended.calls;
    $('login').hidden = true;
    $('sign-out').hidden = !state.token;
    renderLists();
    if (!state.selected && live.calls.length) select(live.calls[0].id);
    else if (state.selected) select(state.selected);
    loadBookings();
    streamEvents();
  } catch (e) {
    if (e instanceof AuthError) { showLogin(!!state.token); return; }
    setConn('reconnecting');
    setTimeout(start, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 10000);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('btn-hangup').addEventListener('click', () => control('hangup'));
  $('btn-interrupt').addEventListener('click', async () => { if (await control('interrupt')) toast('Interrupted the agent.'); });
  $('btn-mute').addEventListener('click', () => control('mute', { muted: !(state.detail && state.detail.muted) }));
  $('say-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('say-text').value.trim();
    if (!text) return;
    if (await control('say', { text })) { $('say-text').value = ''; toast('Sent to the agent.'); }
  });
  $('day').addEventListener('change', () => { if ($('day').value) { state.day = $('day').value; loadBookings(); } });
  $('day-prev').addEventListener('click', () => shiftDay(-1));
  $('day-next').addEventListener('click', () => shiftDay(1));
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    state.token = $('token').value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    start();
  });
  $('sign-out').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    $('token').value = '';
    showLogin(false);
  });
  setInterval(tick, 1000);
  setInterval(refreshCluster, 10000);
  setInterval(() => { if ($('login').hidden) loadBookings(); }, BOOKINGS_REFRESH_MS);
  start();
});
