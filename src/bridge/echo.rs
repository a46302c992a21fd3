//! The built-in `echo` agent: the caller hears their own voice back, about 60 ms later at
//! most. A line test that needs no OpenAI.

/// Bytes of G.711 held at most: 60 ms at 8 kHz.
pub const MAX_HELD: usize = 480;

/// A fixed-size FIFO of G.711 bytes from the caller, read out one 20 ms frame per tick.
/// When it would overflow the oldest audio goes, so the delay never exceeds 60 ms.
#[derive(Debug, Clone)]
pub struct EchoBuffer {
    buf: [u8; MAX_HELD],
    start: usize,
    len: usize,
    silence: u8,
    dropped: u64,
}

impl EchoBuffer {
    /// An empty buffer that pads with `silence` (the codec's silence byte).
    pub fn new(silence: u8) -> Self {
        Self {
            buf: [silence; MAX_HELD],
            start: 0,
            len: 0,
            silence,
            dropped: 0,
        }
    }

    /// Appends a payload received from the caller.
    pub fn push(&mut self, payload: &[u8]) {
        let payload = if payload.len() > MAX_HELD {
            self.dropped += (payload.len() - MAX_HELD) as u64;
            &payload[payload.len() - MAX_HELD..]
        } else {
            payload
        };
        let overflow = (self.len + payload.len()).saturating_sub(MAX_HELD);
        if overflow > 0 {
            self.start = (self.start + overflow) % MAX_HELD;
            self.len -= overflow;
            self.dropped += overflow as u64;
        }
        for &b in payload {
            self.buf[(self.start + self.len) % MAX_HELD] = b;
            self.len += 1;
        }
    }

    /// Fills `frame` with the oldest held audio; silence pads what is missing. Returns how
    /// many bytes were real audio.
    pub fn pop_into(&mut self, frame: &mut [u8]) -> usize {
        let n = frame.len().min(self.len);
        for (i, out) in frame.iter_mut().enumerate() {
            *out = if i < n {
                self.buf[(self.start + i) % MAX_HELD]
            } else {
                self.silence
            };
        }
        self.start = (self.start + n) % MAX_HELD;
        self.len -= n;
        n
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.len
    }

    /// Bytes dropped to keep the delay bounded.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_comes_back_in_order_and_silence_fills_gaps() {
        let mut e = EchoBuffer::new(0xFF);
        let a: Vec<u8> = (0..160).map(|i| i as u8).collect();
        e.push(&a);
        let mut f = [0u8; 160];
        assert_eq!(e.pop_into(&mut f), 160);
        assert_eq!(&f[..], &a[..]);
        assert_eq!(e.pop_into(&mut f), 0);
        assert!(f.iter().all(|&b| b == 0xFF));
        // A 30 ms packet comes out as one full frame and half a frame padded.
        e.push(&[7u8; 240]);
        assert_eq!(e.pop_into(&mut f), 160);
        assert_eq!(e.pop_into(&mut f), 80);
        assert!(f[..80].iter().all(|&b| b == 7) && f[80..].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn never_holds_more_than_60_ms() {
        let mut e = EchoBuffer::new(0xD5);
        for i in 0..10u8 {
            e.push(&[i; 160]);
            assert!(e.held() <= MAX_HELD);
        }
        assert_eq!(e.held(), 480);
        assert_eq!(e.dropped(), 7 * 160);
        let mut f = [0u8; 160];
        e.pop_into(&mut f);
        assert!(
            f.iter().all(|&b| b == 7),
            "the oldest frames were the ones dropped"
        );
    }
}
