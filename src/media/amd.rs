//! Answering-machine detection for the calls the relay places: from the callee's first
//! seconds of audio, a person ("hello?", then waiting) or a machine (a greeting that goes on),
//! and then a machine's beep, after which the message is left. IO-free: 20 ms frames and the
//! time go in ([`Amd::handle_frame`]); a [`Verdict`] comes out ([`Amd::poll_verdict`]).
//!
//! - **Speech** is a frame over [`AmdSettings::speech_dbfs`] mean power; a run of speech ends
//!   after `word_gap` of quiet.
//! - **A person** says a short greeting (at most `greeting_ms` of speech) and then waits:
//!   `after_greeting_ms` of silence after it gives [`Verdict::Person`].
//! - **A machine** talks on: more than `greeting_ms` of speech before such a silence gives
//!   [`Verdict::Machine`].
//! - **Nothing said** within `initial_silence_ms` gives [`Verdict::Silent`] (the agent may speak
//!   first); a decision not made by `total_ms` gives [`Verdict::Unsure`].
//! - **The beep** (after a machine): a steady tone between 300 and 2,500 Hz, told from speech
//!   by its periodicity (normalised autocorrelation at the tone's period above 0.9, the period
//!   steady frame to frame) for `beep_min_ms`; [`Verdict::Beep`] comes when it stops. No beep
//!   within `beep_wait_ms` gives [`Verdict::NoBeep`] (leave the message anyway).

use std::time::Duration;

use crate::media::frame::{mean_square, Frame, FRAME_DURATION as FRAME};

/// The thresholds, from `[amd]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AmdSettings {
    /// Mean power over which a frame is speech (dBFS).
    pub speech_dbfs: f32,
    /// Quiet within a greeting shorter than this does not end it.
    pub word_gap: Duration,
    /// A person's greeting is at most this much speech.
    pub greeting: Duration,
    /// Silence after a short greeting that makes it a person's.
    pub after_greeting: Duration,
    /// No speech this long from the answer: [`Verdict::Silent`].
    pub initial_silence: Duration,
    /// No decision this long from the answer: [`Verdict::Unsure`].
    pub total: Duration,
    /// A tone at least this long is a beep.
    pub beep_min: Duration,
    /// After [`Verdict::Machine`], no beep this long: [`Verdict::NoBeep`].
    pub beep_wait: Duration,
}

impl Default for AmdSettings {
    fn default() -> Self {
        Self {
            speech_dbfs: -40.0,
            word_gap: Duration::from_millis(300),
            greeting: Duration::from_millis(1800),
            after_greeting: Duration::from_millis(700),
            initial_silence: Duration::from_millis(3500),
            total: Duration::from_secs(6),
            beep_min: Duration::from_millis(160),
            beep_wait: Duration::from_secs(30),
        }
    }
}

/// What the detector concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A person answered.
    Person,
    /// A machine answered; its beep is awaited.
    Machine,
    /// The machine's beep is over: leave the message now.
    Beep,
    /// A machine, and no beep came in time.
    NoBeep,
    /// Nothing was said.
    Silent,
    /// No decision in the time allowed.
    Unsure,
}

impl Verdict {
    /// The word logs and records use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Person => "person",
            Verdict::Machine => "machine",
            Verdict::Beep => "beep",
            Verdict::NoBeep => "no_beep",
            Verdict::Silent => "silent",
            Verdict::Unsure => "unsure",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Deciding person or machine.
    Listening,
    /// A machine: waiting for its beep.
    AwaitingBeep { since: Duration },
    /// Decided for good.
    Done,
}

/// The detector of one call.
#[derive(Debug, Clone)]
pub struct Amd {
    s: AmdSettings,
    speech_power: i64,
    start: Option<Duration>,
    phase: Phase,
    /// Speech heard so far (greeting).
    spoken: Duration,
    first_speech: Option<Duration>,
    last_speech: Option<Duration>,
    /// The tone being heard: its period (samples) and how long it has lasted.
    tone: Option<(usize, Duration)>,
    out: Option<Verdict>,
}

impl Amd {
    /// A detector with `s`.
    pub fn new(s: AmdSettings) -> Self {
        // mean square over which a frame is speech: 32768² × 10^(dBFS/10)
        let speech_power =
            (32768.0f64 * 32768.0 * 10f64.powf(f64::from(s.speech_dbfs) / 10.0)) as i64;
        Self {
            s,
            speech_power,
            start: None,
            phase: Phase::Listening,
            spoken: Duration::ZERO,
            first_speech: None,
            last_speech: None,
            tone: None,
            out: None,
        }
    }

    /// The callee's frame at `now`.
    pub fn handle_frame(&mut self, now: Duration, frame: &Frame) {
        let start = *self.start.get_or_insert(now);
        let power = mean_square(frame);
        let loud = power > self.speech_power;
        match self.phase {
            Phase::Done => {}
            Phase::Listening => {
                if loud {
                    self.first_speech.get_or_insert(now);
                    self.spoken += FRAME;
                    self.last_speech = Some(now);
                    if self.spoken > self.s.greeting {
                        self.decide_machine(now);
                    }
                    return;
                }
                match self.last_speech {
                    None if now.saturating_sub(start) >= self.s.initial_silence => {
                        self.done(Verdict::Silent)
                    }
                    Some(last) if now.saturating_sub(last) >= self.s.after_greeting => {
                        self.done(Verdict::Person)
                    }
                    _ if now.saturating_sub(start) >= self.s.total => self.done(Verdict::Unsure),
                    _ => {}
                }
            }
            Phase::AwaitingBeep { since } => {
                let period = if loud { tone_period(frame) } else { None };
                match (period, self.tone) {
                    (Some(p), Some((q, lasted))) if p.abs_diff(q) <= 1 => {
                        self.tone = Some((q, lasted + FRAME));
                    }
                    // a steady tone long enough, then anything else (silence, speech, the
                    // tone's half-frame tail): the beep is over
                    (_, Some((_, lasted))) if lasted >= self.s.beep_min => {
                        self.done(Verdict::Beep);
                    }
                    (Some(p), _) => self.tone = Some((p, FRAME)),
                    (None, _) => {
                        self.tone = None;
                        if now.saturating_sub(since) >= self.s.beep_wait {
                            self.done(Verdict::NoBeep);
                        }
                    }
                }
            }
        }
    }

    fn decide_machine(&mut self, now: Duration) {
        self.out = Some(Verdict::Machine);
        self.phase = Phase::AwaitingBeep { since: now };
    }

    fn done(&mut self, v: Verdict) {
        self.out = Some(v);
        self.phase = Phase::Done;
    }

    /// The verdict reached since the last call, if any (a machine gives two: `Machine`, then
    /// `Beep` or `NoBeep`).
    pub fn poll_verdict(&mut self) -> Option<Verdict> {
        self.out.take()
    }

    /// Still listening (no final verdict yet).
    pub fn is_listening(&self) -> bool {
        self.phase != Phase::Done
    }
}

/// The period (in samples, 3 to 26: 300 to 2,667 Hz at 8 kHz) of a frame that is a pure tone,
/// by normalised autocorrelation; `None` for anything else (speech, noise). No allocation.
fn tone_period(frame: &Frame) -> Option<usize> {
    let x = |i: usize| f32::from(frame[i]);
    let mut r = [0.0f32; 27];
    for (lag, slot) in r.iter_mut().enumerate().skip(3) {
        let n = frame.len() - lag;
        let (mut c, mut e0, mut e1) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            c += x(i) * x(i + lag);
            e0 += x(i) * x(i);
            e1 += x(i + lag) * x(i + lag);
        }
        *slot = c / (e0 * e1).sqrt().max(1.0);
    }
    let best = r.iter().copied().fold(0.0f32, f32::max);
    if best <= 0.9 {
        return None;
    }
    // a tone repeats at every multiple of its period: the shortest lag that nearly matches
    // the best is the period itself, the same from frame to frame
    (3..r.len()).find(|&lag| r[lag] >= best - 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{FRAME_SAMPLES, SILENCE};

    /// Speech-like sound: a 140 Hz voice with harmonics, its loudness moving at 4 Hz.
    fn speech(ms: usize) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let p = 2.0 * std::f32::consts::PI * 140.0 * t;
                let env = 0.75 + 0.25 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                ((p.sin() + 0.5 * (3.0 * p).sin() + 0.3 * (7.0 * p).sin()) * env * 4500.0) as i16
            })
            .collect()
    }

    fn tone(hz: f32, ms: usize) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| ((2.0 * std::f32::consts::PI * hz * i as f32 / 8000.0).sin() * 6000.0) as i16)
            .collect()
    }

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    /// Runs `audio` through a detector; every verdict with its time (ms).
    fn run(audio: &[i16]) -> Vec<(Verdict, u64)> {
        let mut amd = Amd::new(AmdSettings::default());
        let mut out = Vec::new();
        for (i, chunk) in audio.chunks(FRAME_SAMPLES).enumerate() {
            let mut f = SILENCE;
            f[..chunk.len()].copy_from_slice(chunk);
            let now = Duration::from_millis(20 * (i as u64 + 1));
            amd.handle_frame(now, &f);
            if let Some(v) = amd.poll_verdict() {
                out.push((v, now.as_millis() as u64));
            }
        }
        out
    }

    fn cat(parts: &[Vec<i16>]) -> Vec<i16> {
        parts.concat()
    }

    #[test]
    fn hello_then_waiting_is_a_person() {
        for hello in [400, 700, 1200] {
            let v = run(&cat(&[silence(300), speech(hello), silence(3000)]));
            assert_eq!(v.len(), 1, "{hello}: {v:?}");
            assert_eq!(v[0].0, Verdict::Person, "{hello}");
            // decided the after-greeting silence after the hello
            assert!(v[0].1 <= 300 + hello as u64 + 760, "{hello}: {v:?}");
        }
    }

    #[test]
    fn two_short_words_with_a_gap_are_still_a_person() {
        let v = run(&cat(&[
            speech(400),
            silence(250),
            speech(400),
            silence(2000),
        ]));
        assert_eq!(v, [(Verdict::Person, 1760)]);
    }

    #[test]
    fn a_long_greeting_then_a_beep_is_a_machine_and_the_beep_ends_it() {
        // "Hi, you've reached Ada, leave a message after the tone" with pauses, then a beep
        let greeting = cat(&[
            speech(1200),
            silence(200),
            speech(1500),
            silence(250),
            speech(1000),
            silence(400),
        ]);
        for hz in [440.0, 850.0, 1000.0, 1400.0, 2000.0] {
            let v = run(&cat(&[greeting.clone(), tone(hz, 500), silence(600)]));
            let kinds: Vec<Verdict> = v.iter().map(|x| x.0).collect();
            assert_eq!(kinds, [Verdict::Machine, Verdict::Beep], "{hz} Hz: {v:?}");
            // the machine is known once the speech passes the person's greeting length
            assert!(v[0].1 <= 2200, "{v:?}");
            // the beep verdict comes as the tone stops (greeting 4.55 s + 0.5 s)
            assert!((5040..=5100).contains(&v[1].1), "{hz} Hz: {v:?}");
        }
    }

    #[test]
    fn speech_is_not_a_beep() {
        let v = run(&cat(&[
            speech(2500),
            silence(300),
            speech(3000),
            silence(500),
        ]));
        assert_eq!(
            v.iter().map(|x| x.0).collect::<Vec<_>>(),
            [Verdict::Machine]
        );
    }

    #[test]
    fn no_beep_in_time_says_so() {
        let mut audio = cat(&[speech(2500)]);
        audio.extend(silence(31_000));
        let v = run(&audio);
        assert_eq!(
            v.iter().map(|x| x.0).collect::<Vec<_>>(),
            [Verdict::Machine, Verdict::NoBeep]
        );
    }

    #[test]
    fn silence_from_the_start_is_silent() {
        // the first frame is heard at 20 ms: silent 3.5 s after it
        assert_eq!(run(&silence(5000)), [(Verdict::Silent, 3520)]);
    }

    #[test]
    fn a_short_blip_is_not_a_beep_and_quiet_noise_is_not_speech() {
        let noise: Vec<i16> = (0..8000).map(|i| (i * 7919 % 61) as i16 - 30).collect();
        let v = run(&cat(&[
            speech(2500),
            tone(1000.0, 80),
            silence(1000),
            noise,
        ]));
        assert_eq!(
            v.iter().map(|x| x.0).collect::<Vec<_>>(),
            [Verdict::Machine]
        );
    }

    /// A voice at `pitch` Hz with harmonics, its loudness moving at 4 Hz.
    fn voice(pitch: f32, ms: usize, gain: f32) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let p = 2.0 * std::f32::consts::PI * pitch * t;
                let env = 0.75 + 0.25 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                ((p.sin() + 0.5 * (3.0 * p).sin() + 0.3 * (7.0 * p).sin()) * env * gain) as i16
            })
            .collect()
    }

    /// Line noise at about −55 dBFS and a G.711 round trip, as a trunk delivers it.
    fn on_the_line(audio: &[i16], seed: u32) -> Vec<i16> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let law = crate::media::g711::Law::Mu;
        audio
            .chunks(FRAME_SAMPLES)
            .flat_map(|chunk| {
                let mut pcm = SILENCE;
                for (o, &s) in pcm.iter_mut().zip(chunk) {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let noise = (state % 121) as i16 - 60;
                    *o = s.saturating_add(noise);
                }
                let mut g = [0u8; FRAME_SAMPLES];
                law.encode(&pcm, &mut g);
                let mut back = SILENCE;
                law.decode(&g, &mut back);
                back[..chunk.len()].to_vec()
            })
            .collect()
    }

    /// The test set: 48 people (hello 300–1500 ms, one or two words, voices 100–250 Hz, soft
    /// and loud) and 48 machines (greetings 2.5–8 s in phrases, beeps 400–2000 Hz of
    /// 200–1000 ms), each on a noisy G.711 line. Every one must be told right; the beep
    /// verdict must come within 60 ms of the beep's end.
    #[test]
    fn the_test_set_is_told_right() {
        let (mut people_right, mut machines_right, mut beeps_on_time) = (0, 0, 0);
        let mut n = 0u32;
        for pitch in [100.0, 140.0, 190.0, 250.0] {
            for gain in [1500.0, 6000.0] {
                for hello in [300, 600, 900, 1200, 1500, 800] {
                    n += 1;
                    let words = if n % 2 == 0 {
                        cat(&[
                            voice(pitch, hello / 2, gain),
                            silence(200),
                            voice(pitch, hello / 2, gain),
                        ])
                    } else {
                        voice(pitch, hello, gain)
                    };
                    let audio = on_the_line(
                        &cat(&[silence(200 + (n as usize % 5) * 100), words, silence(4000)]),
                        n,
                    );
                    let v = run(&audio);
                    if v.first().map(|x| x.0) == Some(Verdict::Person) {
                        people_right += 1;
                    } else {
                        eprintln!("person {pitch} Hz {gain} {hello} ms: {v:?}");
                    }
                }
                for (k, (greeting_s, beep_hz, beep_ms)) in [
                    (2.5, 400.0, 200),
                    (3.5, 850.0, 400),
                    (4.5, 1000.0, 500),
                    (5.5, 1400.0, 700),
                    (6.5, 2000.0, 1000),
                    (8.0, 440.0, 300),
                ]
                .into_iter()
                .enumerate()
                {
                    n += 1;
                    let mut greeting = Vec::new();
                    let mut left = (greeting_s * 1000.0) as usize;
                    let mut phrase = 0;
                    while left > 0 {
                        let len = left.min(700 + 300 * ((phrase + k) % 4));
                        greeting.extend(voice(pitch, len, gain));
                        greeting.extend(silence(150 + 50 * (phrase % 3)));
                        left -= len;
                        phrase += 1;
                    }
                    greeting.extend(silence(300));
                    let beep_end = (greeting.len() / 8 + beep_ms) as u64;
                    let audio =
                        on_the_line(&cat(&[greeting, tone(beep_hz, beep_ms), silence(1500)]), n);
                    let v = run(&audio);
                    let kinds: Vec<Verdict> = v.iter().map(|x| x.0).collect();
                    if kinds == [Verdict::Machine, Verdict::Beep] {
                        machines_right += 1;
                        if v[1].1.abs_diff(beep_end) <= 60 {
                            beeps_on_time += 1;
                        } else {
                            eprintln!("beep late: {beep_end} ms vs {v:?}");
                        }
                    } else {
                        eprintln!("machine {pitch} Hz {gain} {greeting_s} s, beep {beep_hz} Hz {beep_ms} ms: {v:?}");
                    }
                }
            }
        }
        eprintln!("test set: people {people_right}/48, machines {machines_right}/48, beeps on time {beeps_on_time}/48");
        assert_eq!((people_right, machines_right, beeps_on_time), (48, 48, 48));
    }
}
