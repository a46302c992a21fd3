//! DTMF as RTP telephone events (RFC 4733): key presses from the caller, and key presses
//! the relay sends (an agent dialling an extension after a transfer, say).
//!
//! An event is a run of 4-byte packets that share the RTP timestamp of the key-down and
//! carry a growing duration; the last one has the end bit and is sent three times. The
//! receiver reports each key exactly once, when it ends, with its duration: repeated end
//! packets, late packets of an older event and retransmissions are ignored; a key whose end
//! packets were all lost is still reported, when the next key starts or after a second of
//! silence. IO-free; durations are in 8 kHz timestamp units on the wire.

use std::time::Duration;

/// The RTP clock of telephone-event for an 8 kHz call (RFC 4733 `telephone-event/8000`).
pub const DTMF_CLOCK_RATE: u32 = 8_000;
/// An event with no end packet is reported after this long with no packet for it.
const END_TIMEOUT_US: u64 = 1_000_000;

/// The key of an event code (0-9, `*`, `#`, A-D, and 16 for flash as `!`).
pub const fn event_key(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => (b'0' + event) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + event - 12) as char,
        16 => '!',
        _ => return None,
    })
}

/// The event code of a key (inverse of [`event_key`]); lowercase a-d accepted.
pub const fn key_event(key: char) -> Option<u8> {
    Some(match key {
        '0'..='9' => key as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => key as u8 - b'A' + 12,
        'a'..='d' => key as u8 - b'a' + 12,
        '!' => 16,
        _ => return None,
    })
}

/// One telephone-event payload (RFC 4733 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-15 the DTMF keys, 16 flash).
    pub event: u8,
    /// The end bit: this is the last packet of the event.
    pub end: bool,
    /// Power level, in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads a payload; `None` if shorter than 4 bytes.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let [event, flags, d0, d1, ..] = *payload else {
            return None;
        };
        Some(Self {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        [
            self.event,
            (self.end as u8) << 7 | (self.volume & 0x3F),
            d0,
            d1,
        ]
    }
}

/// A key the caller pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// `0`-`9`, `*`, `#`, `A`-`D`, or `!` for flash.
    pub key: char,
    /// How long it was held, in milliseconds.
    pub duration_ms: u32,
    /// Its power level, in -dBm0.
    pub volume: u8,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    ts: u32,
    event: u8,
    duration: u16,
    volume: u8,
    ended: bool,
    last_us: u64,
}

impl Current {
    fn digit(&self) -> Option<Digit> {
        Some(Digit {
            key: event_key(self.event)?,
            duration_ms: self.duration as u32 * 1000 / DTMF_CLOCK_RATE,
            volume: self.volume,
        })
    }
}

/// Turns received telephone-event packets into keys. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct DtmfReceiver {
    current: Option<Current>,
    pending: Option<Digit>,
}

impl DtmfReceiver {
    /// A receiver with no event in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one telephone-event packet (its RTP timestamp and payload) arriving at `now`.
    /// Returns a key when one ends. In the rare case one call reports two keys (an event
    /// whose end was lost followed by a new one that is over in its first packet), the
    /// second comes from the next [`DtmfReceiver::poll`].
    pub fn push(&mut self, now: Duration, ts: u32, payload: &[u8]) -> Option<Digit> {
        let now_us = now.as_micros() as u64;
        let ev = TelephoneEvent::parse(payload)?;
        let mut finished = None;
        if let Some(cur) = self.current.as_mut() {
            let age = ts.wrapping_sub(cur.ts) as i32;
            if age < 0 {
                return None; // a straggler of an older event
            }
            if age == 0 {
                if cur.ended {
                    return None; // the repeated end packets
                }
                cur.duration = cur.duration.max(ev.duration);
                cur.last_us = now_us;
                if ev.end {
                    cur.ended = true;
                    return cur.digit();
                }
                return None;
            }
            // a new event: the previous one lost its end packets
            if !cur.ended {
                finished = cur.digit();
            }
        }
        let cur = Current {
            ts,
            event: ev.event,
            duration: ev.duration,
            volume: ev.volume,
            ended: ev.end,
            last_us: now_us,
        };
        self.current = Some(cur);
        if ev.end {
            match finished {
                Some(_) => self.pending = cur.digit(),
                None => finished = cur.digit(),
            }
        }
        finished
    }

    /// Reports a key held back by [`DtmfReceiver::push`], or one whose end packets never
    /// came (a second after its last packet). Call on the call's tick.
    pub fn poll(&mut self, now: Duration) -> Option<Digit> {
        if let Some(d) = self.pending.take() {
            return Some(d);
        }
        let cur = self.current.as_mut()?;
        if !cur.ended && (now.as_micros() as u64).saturating_sub(cur.last_us) >= END_TIMEOUT_US {
            cur.ended = true;
            return cur.digit();
        }
        None
    }

    /// The key held down right now, if an event is in progress.
    pub fn pressed(&self) -> Option<char> {
        self.current
            .filter(|c| !c.ended)
            .and_then(|c| event_key(c.event))
    }
}

/// One packet of an outgoing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// The telephone-event payload.
    pub payload: [u8; 4],
    /// Set the RTP marker bit (the first packet of the event).
    pub marker: bool,
    /// When to send it, in ms after the key-down. Every packet of the event carries the
    /// key-down's RTP timestamp and its own sequence number.
    pub at_ms: u32,
}

/// The packets for pressing `key` for `duration_ms` (40 ms to 8 s; 100 is usual): one
/// every 20 ms carrying the duration it reaches (the first sent at key-down), then at
/// key-up the end packet three times, 20 ms apart (RFC 4733 2.5.1). `volume` is in -dBm0
/// (10 is usual). `None` for an unknown key. The next event's key-down must come after the
/// last of these.
pub fn dtmf_packets(
    key: char,
    duration_ms: u32,
    volume: u8,
) -> Option<impl Iterator<Item = DtmfPacket>> {
    let event = key_event(key)?;
    let total_ms = duration_ms.clamp(40, 8000);
    let total = (total_ms * DTMF_CLOCK_RATE / 1000) as u16;
    let updates = total_ms.div_ceil(20);
    let volume = volume.min(63);
    Some((0..updates + 3).map(move |k| {
        let end = k >= updates;
        let (duration, at_ms) = if end {
            (total, total_ms + (k - updates) * 20)
        } else {
            (((k + 1) * 160).min(total as u32) as u16, k * 20)
        };
        DtmfPacket {
            payload: TelephoneEvent {
                event,
                end,
                volume,
                duration,
            }
            .to_bytes(),
            marker: k == 0,
            at_ms,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_codes_round_trip() {
        for e in 0..=16u8 {
            assert_eq!(key_event(event_key(e).unwrap()), Some(e));
        }
        assert_eq!(event_key(17), None);
        assert_eq!(key_event('x'), None);
        assert_eq!(key_event('b'), Some(13));
    }

    #[test]
    fn payload_round_trip() {
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(ev.to_bytes(), [11, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&ev.to_bytes()), Some(ev));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn lost_end_packets_still_report_the_key() {
        let mut r = DtmfReceiver::new();
        let p = |d: u16, end: bool| {
            TelephoneEvent {
                event: 5,
                end,
                volume: 10,
                duration: d,
            }
            .to_bytes()
        };
        assert_eq!(r.push(Duration::ZERO, 100, &p(160, false)), None);
        assert_eq!(r.pressed(), Some('5'));
        assert_eq!(r.push(Duration::from_millis(20), 100, &p(320, false)), None);
        assert_eq!(r.poll(Duration::from_millis(500)), None);
        let d = r.poll(Duration::from_millis(1020)).unwrap();
        assert_eq!((d.key, d.duration_ms), ('5', 40));
        assert_eq!(r.poll(Duration::from_millis(3000)), None);
        assert_eq!(r.pressed(), None);
    }

    #[test]
    fn a_new_key_reports_the_one_whose_end_was_lost() {
        let mut r = DtmfReceiver::new();
        let p = |e: u8, d: u16, end: bool| {
            TelephoneEvent {
                event: e,
                end,
                volume: 10,
                duration: d,
            }
            .to_bytes()
        };
        r.push(Duration::ZERO, 100, &p(1, 400, false));
        let d = r
            .push(Duration::from_millis(200), 2000, &p(2, 160, false))
            .unwrap();
        assert_eq!((d.key, d.duration_ms), ('1', 50));
        // and both at once: the older comes now, the newer on poll
        r.push(Duration::from_millis(300), 4000, &p(3, 160, false));
        let d = r
            .push(Duration::from_millis(400), 6000, &p(4, 800, true))
            .unwrap();
        assert_eq!(d.key, '3');
        assert_eq!(r.poll(Duration::from_millis(400)).unwrap().key, '4');
    }

    #[test]
    fn stragglers_of_an_older_event_are_ignored() {
        let mut r = DtmfReceiver::new();
        let p = |e: u8, d: u16, end: bool| {
            TelephoneEvent {
                event: e,
                end,
                volume: 10,
                duration: d,
            }
            .to_bytes()
        };
        assert!(r.push(Duration::ZERO, 100, &p(1, 800, true)).is_some());
        assert!(r.push(Duration::ZERO, 2000, &p(2, 800, true)).is_some());
        assert_eq!(r.push(Duration::ZERO, 100, &p(1, 800, true)), None);
    }
}
