//! The line-echo gate: keeps the agent's own voice, coming back on the caller's line (a
//! speakerphone, a poor hybrid), from reaching the model as if the caller spoke.
//!
//! The relay alone knows what it just played. For each 20 ms frame sent to the caller it
//! keeps the frame's power; for each frame from the caller it compares the caller's power
//! with the loudest frame played over the last [`WINDOW`] frames (the echo path: the network
//! both ways, the caller's jitter buffer and ours). A caller frame that is quieter than that
//! reference times the line's echo-return loss (ERL) plus a margin is echo and goes to the
//! model as silence; one louder than any echo could be is the caller talking over the agent
//! (double talk) and passes, with a short hangover so a word's tail is not cut. With the agent
//! quiet, everything passes.
//!
//! The ERL starts at [`INITIAL_ERL_DB`] (a line returning the agent at up to −12 dB, plus the
//! margin, is gated from the first word, the greeting included) and follows the line: it
//! rises at once to the loudest echo seen and decays slowly, so a quiet line lets softer
//! barge-ins through. IO-free and allocation-free: the call's task feeds it both directions
//! once per tick.

use std::sync::LazyLock;

use crate::media::frame::{Frame, FRAME_SAMPLES};
use crate::media::g711::Law;

/// Played frames remembered: 320 ms of echo path.
pub const WINDOW: usize = 16;
/// The echo-return loss assumed before the line has shown its own.
pub const INITIAL_ERL_DB: f32 = -12.0;
/// The lowest ERL tracked (a line with no audible echo).
const MIN_ERL_DB: f32 = -50.0;
/// How fast the tracked ERL falls when the echo gets quieter, per gated frame (2.5 dB/s).
const ERL_DECAY_DB: f32 = 0.05;
/// Frames passed after the caller's last frame above the echo (100 ms).
const HANGOVER_FRAMES: u8 = 5;
/// Mean power of a played frame below which the agent counts as silent (−55 dBFS).
const QUIET_PLAYED: f32 = 32768.0 * 32768.0 * 3.2e-6;

/// What the gate did with one caller frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The agent was silent: the caller's frame went on as is.
    Clear,
    /// The agent was speaking and the caller was louder than its echo: passed.
    DoubleTalk,
    /// Echo of the agent: the model got silence instead.
    Echo,
}

/// Counts for the call's media stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoCounters {
    /// Caller frames replaced by silence as echo.
    pub gated: u64,
    /// Caller frames passed while the agent spoke (double talk and hangover).
    pub double_talk: u64,
}

/// Power of each of the 256 codes of a G.711 law, one table per law for every call.
type CodePower = [f32; 256];

fn code_power_of(law: Law) -> CodePower {
    let codes: [u8; 256] = std::array::from_fn(|i| i as u8);
    let mut pcm = [0i16; 256];
    law.decode(&codes, &mut pcm);
    pcm.map(|s| f32::from(s) * f32::from(s))
}

static MU_POWER: LazyLock<CodePower> = LazyLock::new(|| code_power_of(Law::Mu));
static A_POWER: LazyLock<CodePower> = LazyLock::new(|| code_power_of(Law::A));

/// The gate. See the module docs.
#[derive(Debug, Clone)]
pub struct EchoGate {
    /// Power of each G.711 code of the phone leg's law.
    code_power: &'static CodePower,
    played: [f32; WINDOW],
    next: usize,
    erl_db: f32,
    margin: f32,
    hangover: u8,
    counters: EchoCounters,
}

fn db_to_ratio(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

fn power(frame: &Frame) -> f32 {
    frame
        .iter()
        .map(|&s| f32::from(s) * f32::from(s))
        .sum::<f32>()
        / FRAME_SAMPLES as f32
}

impl EchoGate {
    /// A gate for a phone leg in `law` that passes the caller only `margin_db` above the
    /// loudest echo the line could return.
    pub fn new(law: Law, margin_db: f32) -> Self {
        let code_power = match law {
            Law::Mu => &*MU_POWER,
            Law::A => &*A_POWER,
        };
        Self {
            code_power,
            played: [0.0; WINDOW],
            next: 0,
            erl_db: INITIAL_ERL_DB,
            margin: db_to_ratio(margin_db),
            hangover: 0,
            counters: EchoCounters::default(),
        }
    }

    /// One frame sent to the caller, as the G.711 bytes on the line.
    pub fn handle_played(&mut self, frame: &[u8]) {
        let sum: f32 = frame.iter().map(|&b| self.code_power[b as usize]).sum();
        self.played[self.next] = sum / frame.len().max(1) as f32;
        self.next = (self.next + 1) % WINDOW;
    }

    /// One frame from the caller, about to go to the model: replaced by silence when it is
    /// the agent's echo.
    pub fn handle_caller(&mut self, frame: &mut Frame) -> Verdict {
        let reference = self.played.iter().copied().fold(0.0, f32::max);
        if reference < QUIET_PLAYED {
            self.hangover = 0;
            return Verdict::Clear;
        }
        let caller = power(frame);
        let echo_max = reference * db_to_ratio(self.erl_db);
        if caller > echo_max * self.margin {
            self.hangover = HANGOVER_FRAMES;
            self.counters.double_talk += 1;
            return Verdict::DoubleTalk;
        }
        if self.hangover > 0 {
            self.hangover -= 1;
            self.counters.double_talk += 1;
            return Verdict::DoubleTalk;
        }
        // echo: the line's ERL follows the loudest echo, and decays slowly below it
        let seen_db = if caller > 0.0 {
            10.0 * (caller / reference).log10()
        } else {
            MIN_ERL_DB
        };
        self.erl_db = seen_db.max(self.erl_db - ERL_DECAY_DB).max(MIN_ERL_DB);
        frame.fill(0);
        self.counters.gated += 1;
        Verdict::Echo
    }

    /// The line's echo-return loss as tracked now, in dB (negative).
    pub fn erl_db(&self) -> f32 {
        self.erl_db
    }

    /// What the gate did so far.
    pub fn counters(&self) -> EchoCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of a 300 Hz tone at `amp`, phase-continuous over frames.
    fn tone(i: usize, amp: f32) -> Frame {
        std::array::from_fn(|n| {
            let t = (i * FRAME_SAMPLES + n) as f32 / 8000.0;
            (amp * (2.0 * std::f32::consts::PI * 300.0 * t).sin()) as i16
        })
    }

    /// A "speech-like" frame: a tone whose loudness follows syllables (on 200 ms, off 100).
    fn syllable(i: usize, amp: f32) -> Frame {
        if i % 15 < 10 {
            tone(i, amp)
        } else {
            [0; FRAME_SAMPLES]
        }
    }

    fn scale(f: &Frame, gain_db: f32) -> Frame {
        let g = 10f32.powf(gain_db / 20.0);
        std::array::from_fn(|n| (f32::from(f[n]) * g) as i16)
    }

    fn encode(law: Law, f: &Frame) -> [u8; FRAME_SAMPLES] {
        let mut out = [0u8; FRAME_SAMPLES];
        law.encode(f, &mut out);
        out
    }

    /// The agent speaks for `frames`; the line returns it `delay` frames later at `erl_db`,
    /// plus `caller(i)`. Returns the verdict of each caller frame.
    fn run(
        frames: usize,
        delay: usize,
        erl_db: f32,
        caller: impl Fn(usize) -> Frame,
    ) -> Vec<Verdict> {
        let law = Law::Mu;
        let mut gate = EchoGate::new(law, 6.0);
        let agent: Vec<Frame> = (0..frames).map(|i| syllable(i, 8000.0)).collect();
        let mut verdicts = Vec::new();
        for i in 0..frames {
            let echo = if i >= delay {
                scale(&agent[i - delay], erl_db)
            } else {
                [0; FRAME_SAMPLES]
            };
            let c = caller(i);
            let mut mixed: Frame = std::array::from_fn(|n| echo[n].saturating_add(c[n]));
            verdicts.push(gate.handle_caller(&mut mixed));
            if verdicts[i] == Verdict::Echo {
                assert!(mixed.iter().all(|&s| s == 0), "echo goes on as silence");
            }
            gate.handle_played(&encode(law, &agent[i]));
        }
        verdicts
    }

    #[test]
    fn the_agents_echo_at_minus_10_db_never_passes_at_any_delay_of_the_path() {
        for delay_ms in [40, 80, 120, 200] {
            let v = run(250, delay_ms / 20, -10.0, |_| [0; FRAME_SAMPLES]);
            let passed = v.iter().filter(|v| **v == Verdict::DoubleTalk).count();
            assert_eq!(
                passed, 0,
                "delay {delay_ms} ms: {passed} echo frames passed"
            );
        }
    }

    #[test]
    fn the_caller_talking_over_the_agent_passes_at_once() {
        // the caller starts at frame 100, as loud as the agent, over the agent's echo
        let v = run(160, 4, -10.0, |i| {
            if i >= 100 {
                tone(i * 3, 8000.0)
            } else {
                [0; FRAME_SAMPLES]
            }
        });
        assert_eq!(
            v[100],
            Verdict::DoubleTalk,
            "the first frame of the barge-in"
        );
        assert!(v[100..].iter().all(|v| *v == Verdict::DoubleTalk));
        assert!(v[..100].iter().all(|v| *v != Verdict::DoubleTalk));
    }

    #[test]
    fn with_the_agent_silent_the_caller_is_never_touched() {
        let law = Law::A;
        let mut gate = EchoGate::new(law, 6.0);
        for i in 0..100 {
            gate.handle_played(&encode(law, &[0; FRAME_SAMPLES]));
            let mut f = tone(i, 300.0);
            let before = f;
            assert_eq!(gate.handle_caller(&mut f), Verdict::Clear);
            assert_eq!(f, before);
        }
        assert_eq!(gate.counters(), EchoCounters::default());
    }

    #[test]
    fn a_quiet_line_learns_its_loss_and_lets_a_softer_barge_in_through() {
        let law = Law::Mu;
        let mut gate = EchoGate::new(law, 6.0);
        let agent = |i: usize| tone(i, 8000.0);
        // 10 s of agent audio returned at -30 dB
        for i in 0..500 {
            let mut echo = scale(&agent(i), -30.0);
            gate.handle_caller(&mut echo);
            gate.handle_played(&encode(law, &agent(i + 1)));
        }
        assert!(gate.erl_db() < -20.0, "tracked {}", gate.erl_db());
        // a caller 12 dB under the agent now passes; on a fresh gate (-12 dB assumed) not
        let soft = |i: usize| scale(&tone(i * 3, 8000.0), -12.0);
        let mut f = soft(0);
        assert_eq!(gate.handle_caller(&mut f), Verdict::DoubleTalk);
        let mut fresh = EchoGate::new(law, 6.0);
        fresh.handle_played(&encode(law, &agent(0)));
        let mut f = soft(0);
        assert_eq!(fresh.handle_caller(&mut f), Verdict::Echo);
    }

    #[test]
    fn a_louder_echo_raises_the_tracked_loss_at_once() {
        let law = Law::Mu;
        let mut gate = EchoGate::new(law, 6.0);
        gate.handle_played(&encode(law, &tone(0, 8000.0)));
        let mut echo = scale(&tone(1, 8000.0), -8.0);
        assert_eq!(gate.handle_caller(&mut echo), Verdict::Echo);
        assert!((gate.erl_db() + 8.0).abs() < 1.0, "{}", gate.erl_db());
    }
}
