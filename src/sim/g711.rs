//! G.711 µ-law and A-law (ITU-T G.711), for the WebSocket `audio/pcmu` / `audio/pcma` formats
//! and the committed prompt recordings. The simulator keeps its own small copy so that it talks
//! to the relay only over the wire.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32_635;

/// Encodes one 16-bit sample as µ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 as i32 | mantissa) as u8
}

/// Decodes one µ-law byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = ((b >> 4) & 0x07) as i32;
    let mantissa = (b & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one 16-bit sample as A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let mut s = sample as i32 >> 3; // 13-bit magnitude domain
    let sign = if s >= 0 {
        0xD5
    } else {
        s = -s - 1;
        0x55
    };
    let s = s.min(0x0FFF);
    let code = if s < 32 {
        s >> 1
    } else {
        let exponent = 31 - (s as u32).leading_zeros() as i32 - 4; // 1..=7
        (exponent << 4) | ((s >> exponent) & 0x0F)
    };
    (code as u8) ^ sign
}

/// Decodes one A-law byte.
pub fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let exponent = ((b >> 4) & 0x07) as i32;
    let mantissa = (b & 0x0F) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if b & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_round_trip_is_close() {
        for s in (-32_000i32..32_000).step_by(97) {
            let back = ulaw_decode(ulaw_encode(s as i16)) as i32;
            assert!((back - s).abs() <= (s.abs() / 16).max(8), "{s} -> {back}");
        }
        assert_eq!(ulaw_encode(0), 0xFF);
    }

    #[test]
    fn alaw_round_trip_is_close() {
        for s in (-32_000i32..32_000).step_by(97) {
            let back = alaw_decode(alaw_encode(s as i16)) as i32;
            assert!((back - s).abs() <= (s.abs() / 16).max(16), "{s} -> {back}");
        }
        assert_eq!(alaw_encode(0), 0xD5);
    }
}
