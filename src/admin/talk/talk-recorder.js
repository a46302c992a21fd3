// voxrelay test call: the recorder, an AudioWorklet module (loaded by talk.js with
// audioWorklet.addModule('/talk-recorder.js') when the relay says the call is recorded).
//
// Its one input carries two channels: the microphone on the left, the agent's track on the
// right (a ChannelMergerNode in talk.js downmixes each to mono). It resamples both to 8 kHz
// (each output sample is the mean of the input samples of its 1/8000 s, a box filter that
// keeps speech clear and needs no state beyond a sum) and posts interleaved 16-bit PCM to
// the page in pieces of a quarter of a second: the format of the relay's phone recordings.
// The message 'flush' posts what is left, then 'flushed', and stops.
'use strict';

const RATE = 8000;
const PIECE = RATE / 4; // stereo frames per message

class VoxrelayRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    // output samples per input sample (sampleRate is the context's)
    this.step = RATE / sampleRate;
    this.phase = 0;
    this.sumL = 0;
    this.sumR = 0;
    this.n = 0;
    this.buf = new Int16Array(PIECE * 2);
    this.len = 0;
    this.on = true;
    this.port.onmessage = (e) => {
      if (e.data !== 'flush' || !this.on) return;
      this.post();
      this.on = false;
      this.port.postMessage('flushed');
    };
  }

  post() {
    if (!this.len) return;
    const out = this.buf.slice(0, this.len * 2);
    this.port.postMessage(out.buffer, [out.buffer]);
    this.len = 0;
  }

  process(inputs) {
    if (!this.on) return false;
    const input = inputs[0] || [];
    // no channel: nothing connected yet, which is silence, so that time keeps going
    const left = input[0];
    const right = input.length > 1 ? input[1] : null;
    const frames = left ? left.length : 128;
    for (let i = 0; i < frames; i += 1) {
      this.sumL += left ? left[i] : 0;
      this.sumR += right ? right[i] : 0;
      this.n += 1;
      this.phase += this.step;
      if (this.phase >= 1) {
        this.phase -= 1;
        const l = Math.max(-1, Math.min(1, this.sumL / this.n));
        const r = Math.max(-1, Math.min(1, this.sumR / this.n));
        this.buf[this.len * 2] = Math.round(l * 32767);
        this.buf[this.len * 2 + 1] = Math.round(r * 32767);
        this.len += 1;
        this.sumL = 0;
        this.sumR = 0;
        this.n = 0;
        if (this.len === PIECE) this.post();
      }
    }
    return true;
  }
}

registerProcessor('voxrelay-recorder', VoxrelayRecorder);
