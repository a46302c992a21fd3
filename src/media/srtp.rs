//! SRTP and SRTCP (RFC 3711) for the phone leg, keyed by SDES (RFC 4568), IO-free.
//!
//! Only the two suites SIP trunks offer in practice: `AES_CM_128_HMAC_SHA1_80` and
//! `AES_CM_128_HMAC_SHA1_32` (AES-128 counter mode, HMAC-SHA1 tags of 80 or 32 bits on RTP,
//! always 80 bits on RTCP), no MKI, key derivation rate 0. The primitives (AES block, AES-CTR,
//! HMAC-SHA1) are the webrtc 0.21 line's `rtc-crypto`, which works in place: this module only
//! frames packets (the IV, the packet index with its rollover counter, the replay window), so
//! protecting and unprotecting allocate nothing. The tests check it against RFC 3711's test
//! vectors and, packet for packet, against `rtc-srtp`, the same line's SRTP.
//!
//! One [`SrtpContext`] serves both directions of a call: the relay's own master key protects
//! what it sends, the caller's unprotects what it receives. It keeps one stream state per
//! direction (the phone leg carries one SSRC each way); a packet from another SSRC starts a
//! new state, but only once it has authenticated, so forged packets change nothing. The
//! replay windows of the last [`SSRC_HISTORY`] received SSRCs are kept, so packets of an
//! earlier SSRC (a caller that changed SSRC, say after a hold) cannot be replayed as a new
//! stream.
//!
//! Keys are secrets: [`MasterKey`] zeroes its bytes when dropped and its `Debug` shows none.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::secret::ct_eq as constant_time_eq;
use base64::Engine as _;
use rand::RngCore as _;
use rtc_crypto::{
    BlockCipherAlgorithm, HmacAlgorithm, Mac, RTCCrypto, RTCCryptoProvider, StreamCipher,
    StreamCipherAlgorithm,
};

/// Bytes of an AES-128 master key.
pub const KEY_LEN: usize = 16;
/// Bytes of a master salt.
pub const SALT_LEN: usize = 14;
/// Bytes of the SDES `inline:` key-salt (key then salt).
pub const MASTER_LEN: usize = KEY_LEN + SALT_LEN;
/// The SRTCP authentication tag: 80 bits for both suites (RFC 4568 section 6.2).
pub const RTCP_TAG_LEN: usize = 10;
/// What SRTCP adds to an RTCP packet: the E flag and index word, then the tag.
pub const RTCP_OVERHEAD: usize = 4 + RTCP_TAG_LEN;

const MAX_SRTCP_INDEX: u32 = 0x7FFF_FFFF;
const MAX_INDEX: u64 = (1 << 48) - 1;

/// An SRTP crypto suite of RFC 4568 the relay speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoSuite {
    /// AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, 32-bit HMAC-SHA1 tag on RTP (80 bits on RTCP).
    AesCm128HmacSha1_32,
}

impl CryptoSuite {
    /// Every suite, the relay's preferred first.
    pub const ALL: [CryptoSuite; 2] = [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
    ];

    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite of an `a=crypto` name, if the relay speaks it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Bytes of the authentication tag on each SRTP packet.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => 10,
            CryptoSuite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// Why an SDES key does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64, or not 30 bytes of key and salt.
    #[error("the inline key is not 30 bytes of base64")]
    Malformed,
}

/// A master key and salt: one side's SDES `inline:` key. Zeroed when dropped; never printed.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; MASTER_LEN],
}

impl MasterKey {
    /// A fresh random key from the thread's cryptographically secure generator.
    pub fn random() -> Self {
        let mut bytes = [0u8; MASTER_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// The key of raw key and salt bytes.
    pub fn from_bytes(bytes: [u8; MASTER_LEN]) -> Self {
        Self { bytes }
    }

    /// Decodes the base64 of an `inline:` key (padding optional).
    pub fn from_inline(text: &str) -> Result<Self, KeyError> {
        let mut bytes = [0u8; MASTER_LEN];
        // 30 bytes are exactly 40 characters of base64; anything else is a wrong key length
        // (and this bound keeps a long attribute from decoding into a buffer at all).
        if text.len() != 40 {
            return Err(KeyError::Malformed);
        }
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(text, &mut bytes)
            .map_err(|_| KeyError::Malformed)?;
        if n != MASTER_LEN {
            return Err(KeyError::Malformed);
        }
        Ok(Self { bytes })
    }

    /// The base64 for an `inline:` key in our SDP.
    pub fn to_inline(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.bytes)
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..KEY_LEN]
    }

    fn salt(&self) -> &[u8] {
        &self.bytes[KEY_LEN..]
    }
}

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.bytes, &other.bytes)
    }
}

impl Eq for MasterKey {}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// Overwrites a secret with zeros in a way the optimiser keeps.
fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// The keys of one SRTP call: the suite, the relay's key (what it sends) and the caller's
/// (what it receives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The agreed suite.
    pub suite: CryptoSuite,
    /// The relay's master key, sent in our answer; protects what the relay sends.
    pub local: MasterKey,
    /// The caller's master key, from the offer; unprotects what the relay receives.
    pub remote: MasterKey,
}

/// Why a packet was not protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Too short, not version 2, a header longer than the packet, or no room to write.
    #[error("not an SRTP/SRTCP packet")]
    Malformed,
    /// The authentication tag did not match.
    #[error("authentication failed")]
    AuthFailed,
    /// Already received, or older than the replay window.
    #[error("replayed or too old")]
    Replayed,
    /// The key's packet budget is spent (2^48 SRTP, 2^31 SRTCP packets): rekey.
    #[error("key exhausted")]
    Exhausted,
    /// The crypto provider refused (cannot happen with the fixed key lengths here).
    #[error("crypto provider error")]
    Crypto,
}

fn provider() -> Result<&'static dyn RTCCrypto, SrtpError> {
    static PROVIDER: OnceLock<Option<Arc<dyn RTCCryptoProvider>>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| rtc_crypto::default_provider().ok())
        .as_deref()
        .map(|p| p.crypto())
        .ok_or(SrtpError::Crypto)
}

/// The session keys of one direction and one of RTP or RTCP (RFC 3711 section 4.3).
struct SessionKeys {
    cipher: Box<dyn StreamCipher>,
    mac: Box<dyn Mac>,
    salt: [u8; SALT_LEN],
}

const LABEL_RTP: u8 = 0x00;
const LABEL_RTCP: u8 = 0x03;

impl SessionKeys {
    /// Derives the encryption key, authentication key and salt (labels `base`, `base + 1`,
    /// `base + 2`) from a master key, with key derivation rate 0.
    fn derive(crypto: &dyn RTCCrypto, master: &MasterKey, base: u8) -> Result<Self, SrtpError> {
        let mut enc = [0u8; KEY_LEN];
        let mut auth = [0u8; 20];
        let mut salt = [0u8; SALT_LEN];
        let made = kdf(crypto, master, base, &mut enc)
            .and_then(|_| kdf(crypto, master, base + 1, &mut auth))
            .and_then(|_| kdf(crypto, master, base + 2, &mut salt))
            .and_then(|_| {
                let cipher = crypto
                    .new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &enc)
                    .map_err(|_| SrtpError::Crypto)?;
                let mac = crypto
                    .new_hmac(HmacAlgorithm::Sha1, &auth)
                    .map_err(|_| SrtpError::Crypto)?;
                Ok((cipher, mac))
            });
        wipe(&mut enc);
        wipe(&mut auth);
        let (cipher, mac) = made?;
        Ok(Self { cipher, mac, salt })
    }
}

/// The AES-CM pseudo-random function of RFC 3711 section 4.3.3: AES of
/// (master salt XOR label · 2^48) · 2^16 + block counter, under the master key.
fn kdf(
    crypto: &dyn RTCCrypto,
    master: &MasterKey,
    label: u8,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = [0u8; 16];
        block[..SALT_LEN].copy_from_slice(master.salt());
        block[7] ^= label;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        crypto
            .block_encrypt(BlockCipherAlgorithm::Aes128, master.key(), &mut block)
            .map_err(|_| SrtpError::Crypto)?;
        chunk.copy_from_slice(&block[..chunk.len()]);
        wipe(&mut block);
    }
    Ok(())
}

/// The counter-mode IV (RFC 3711 section 4.1.1): salt · 2^16 XOR SSRC · 2^64 XOR index · 2^16.
fn iv(salt: &[u8; SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..14].copy_from_slice(&index.to_be_bytes()[2..]);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// The packet index of a sequence number, given the highest index so far (RFC 3711
/// appendix A); `None` when it would fall before the stream's start or past 2^48.
fn estimate_index(top: u64, seq: u16) -> Option<u64> {
    let roc = top >> 16;
    let s_l = top as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    let index = (v << 16) | u64::from(seq);
    (index <= MAX_INDEX).then_some(index)
}

/// A 64-packet replay window below the highest index seen (RFC 3711 section 3.3.2).
#[derive(Debug, Clone, Copy)]
struct Window {
    top: u64,
    bits: u64,
}

impl Window {
    fn new(index: u64) -> Self {
        Self {
            top: index,
            bits: 1,
        }
    }

    fn fresh(&self, index: u64) -> bool {
        if index > self.top {
            return true;
        }
        let back = self.top - index;
        back < 64 && self.bits & (1 << back) == 0
    }

    fn mark(&mut self, index: u64) {
        if index > self.top {
            let ahead = index - self.top;
            self.bits = if ahead >= 64 { 0 } else { self.bits << ahead };
            self.bits |= 1;
            self.top = index;
        } else if self.top - index < 64 {
            // (an index 64 or more behind is outside the window: found by fuzzing)
            self.bits |= 1 << (self.top - index);
        }
    }
}

/// One direction's stream: its SSRC and where its index is.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    window: Window,
}

/// How many received SSRCs keep their replay window: the current one and earlier ones. A
/// phone leg changes SSRC rarely (a re-INVITE, a transfer); a fixed array keeps the state
/// bounded whatever a peer sends, and only authenticated packets ever add an SSRC.
pub const SSRC_HISTORY: usize = 4;

/// The replay windows of the last [`SSRC_HISTORY`] SSRCs received, most recent first.
#[derive(Debug, Clone, Copy, Default)]
struct Streams {
    slots: [Option<Stream>; SSRC_HISTORY],
}

impl Streams {
    /// The window of `ssrc`, if it is one of those kept.
    fn find(&self, ssrc: u32) -> Option<Stream> {
        self.slots
            .iter()
            .flatten()
            .find(|s| s.ssrc == ssrc)
            .copied()
    }

    /// Marks `index` of `ssrc` as received: moves its stream to the front, or starts one
    /// there (the oldest kept one is forgotten when all slots are taken).
    fn mark(&mut self, ssrc: u32, index: u64) {
        let at = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|s| s.ssrc == ssrc));
        let stream = match at.and_then(|i| self.slots[i]) {
            Some(mut s) => {
                s.window.mark(index);
                s
            }
            None => Stream {
                ssrc,
                window: Window::new(index),
            },
        };
        let end = at.unwrap_or(SSRC_HISTORY - 1);
        self.slots.copy_within(0..end, 1);
        self.slots[0] = Some(stream);
    }
}

/// Where the payload starts: after the fixed header, the CSRCs and any header extension.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0F);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4).ok_or(SrtpError::Malformed)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if len > packet.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The SRTP and SRTCP state of one call, both directions.
pub struct SrtpContext {
    suite: CryptoSuite,
    tx_rtp: SessionKeys,
    tx_rtcp: SessionKeys,
    rx_rtp: SessionKeys,
    rx_rtcp: SessionKeys,
    tx: Option<Stream>,
    rx: Streams,
    tx_rtcp_index: u32,
    rx_rtcp_windows: Streams,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys of both directions.
    pub fn new(keys: &SrtpKeys) -> Result<Self, SrtpError> {
        let crypto = provider()?;
        Ok(Self {
            suite: keys.suite,
            tx_rtp: SessionKeys::derive(crypto, &keys.local, LABEL_RTP)?,
            tx_rtcp: SessionKeys::derive(crypto, &keys.local, LABEL_RTCP)?,
            rx_rtp: SessionKeys::derive(crypto, &keys.remote, LABEL_RTP)?,
            rx_rtcp: SessionKeys::derive(crypto, &keys.remote, LABEL_RTCP)?,
            tx: None,
            rx: Streams::default(),
            tx_rtcp_index: 0,
            rx_rtcp_windows: Streams::default(),
        })
    }

    /// The suite in use.
    pub fn suite(&self) -> CryptoSuite {
        self.suite
    }

    /// Protects an RTP packet into `out`; returns the SRTP packet's length (the input's plus
    /// the tag).
    pub fn protect_rtp(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let len = plain.len();
        let header = rtp_header_len(plain)?;
        if out.len() < len + tag_len {
            return Err(SrtpError::Malformed);
        }
        let seq = u16::from_be_bytes([plain[2], plain[3]]);
        let ssrc = be_u32(&plain[8..12]);
        let index = match self.tx {
            Some(s) if s.ssrc == ssrc => estimate_index(s.window.top, seq),
            _ => Some(u64::from(seq)),
        }
        .ok_or(SrtpError::Exhausted)?;
        let keys = &mut self.tx_rtp;
        out[..len].copy_from_slice(plain);
        keys.cipher
            .apply_keystream(&iv(&keys.salt, ssrc, index), &mut out[header..len])
            .map_err(|_| SrtpError::Crypto)?;
        let roc = ((index >> 16) as u32).to_be_bytes();
        let mut tag = [0u8; 20];
        keys.mac
            .sign(&[&out[..len], &roc], &mut tag)
            .map_err(|_| SrtpError::Crypto)?;
        out[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
        match &mut self.tx {
            Some(s) if s.ssrc == ssrc => s.window.mark(index),
            tx => {
                *tx = Some(Stream {
                    ssrc,
                    window: Window::new(index),
                })
            }
        }
        Ok(len + tag_len)
    }

    /// Checks and decrypts an SRTP packet in place; returns the RTP packet's length (the tag
    /// removed). On an error nothing changed but, perhaps, the buffer's bytes.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let Some(len) = packet.len().checked_sub(tag_len) else {
            return Err(SrtpError::Malformed);
        };
        let header = rtp_header_len(&packet[..len])?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = be_u32(&packet[8..12]);
        let known = self.rx.find(ssrc);
        let index = match known {
            Some(s) => {
                let index = estimate_index(s.window.top, seq).ok_or(SrtpError::Replayed)?;
                if !s.window.fresh(index) {
                    return Err(SrtpError::Replayed);
                }
                index
            }
            // A new stream starts with rollover counter 0 (RFC 4568 section 6.4.1).
            None => u64::from(seq),
        };
        let keys = &mut self.rx_rtp;
        let roc = ((index >> 16) as u32).to_be_bytes();
        let mut tag = [0u8; 20];
        keys.mac
            .sign(&[&packet[..len], &roc], &mut tag)
            .map_err(|_| SrtpError::Crypto)?;
        if !constant_time_eq(&tag[..tag_len], &packet[len..]) {
            return Err(SrtpError::AuthFailed);
        }
        keys.cipher
            .apply_keystream(&iv(&keys.salt, ssrc, index), &mut packet[header..len])
            .map_err(|_| SrtpError::Crypto)?;
        self.rx.mark(ssrc, index);
        Ok(len)
    }

    /// Protects an RTCP (compound) packet into `out`; returns the SRTCP packet's length (the
    /// input's plus [`RTCP_OVERHEAD`]).
    pub fn protect_rtcp(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        let len = plain.len();
        if len < 8 || plain[0] >> 6 != 2 || out.len() < len + RTCP_OVERHEAD {
            return Err(SrtpError::Malformed);
        }
        if self.tx_rtcp_index > MAX_SRTCP_INDEX {
            return Err(SrtpError::Exhausted);
        }
        let index = self.tx_rtcp_index;
        let ssrc = be_u32(&plain[4..8]);
        let keys = &mut self.tx_rtcp;
        out[..len].copy_from_slice(plain);
        keys.cipher
            .apply_keystream(&iv(&keys.salt, ssrc, u64::from(index)), &mut out[8..len])
            .map_err(|_| SrtpError::Crypto)?;
        out[len..len + 4].copy_from_slice(&(index | 1 << 31).to_be_bytes());
        let mut tag = [0u8; 20];
        keys.mac
            .sign(&[&out[..len + 4]], &mut tag)
            .map_err(|_| SrtpError::Crypto)?;
        out[len + 4..len + RTCP_OVERHEAD].copy_from_slice(&tag[..RTCP_TAG_LEN]);
        self.tx_rtcp_index += 1;
        Ok(len + RTCP_OVERHEAD)
    }

    /// Checks and (when its E flag says so) decrypts an SRTCP packet in place; returns the
    /// RTCP packet's length.
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let Some(len) = packet.len().checked_sub(RTCP_OVERHEAD) else {
            return Err(SrtpError::Malformed);
        };
        if len < 8 || packet[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be_u32(&packet[4..8]);
        let word = be_u32(&packet[len..len + 4]);
        let encrypted = word >> 31 == 1;
        let index = u64::from(word & MAX_SRTCP_INDEX);
        let known = self.rx_rtcp_windows.find(ssrc);
        if known.is_some_and(|s| !s.window.fresh(index)) {
            return Err(SrtpError::Replayed);
        }
        let keys = &mut self.rx_rtcp;
        let mut tag = [0u8; 20];
        keys.mac
            .sign(&[&packet[..len + 4]], &mut tag)
            .map_err(|_| SrtpError::Crypto)?;
        if !constant_time_eq(&tag[..RTCP_TAG_LEN], &packet[len + 4..]) {
            return Err(SrtpError::AuthFailed);
        }
        if encrypted {
            keys.cipher
                .apply_keystream(&iv(&keys.salt, ssrc, index), &mut packet[8..len])
                .map_err(|_| SrtpError::Crypto)?;
        }
        self.rx_rtcp_windows.mark(ssrc, index);
        Ok(len)
    }
}

/// Hands a call's keys from its SIP side to its media side: the SIP side [`KeySlot::set`]s
/// the keys of each answer that changes them, the leg picks them up before its next packet.
/// Clones share the slot.
#[derive(Clone, Default)]
pub struct KeySlot {
    inner: Arc<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    generation: AtomicU64,
    keys: Mutex<Option<SrtpKeys>>,
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySlot")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl KeySlot {
    /// Puts new keys in the slot (`None`: plain RTP from now on).
    pub fn set(&self, keys: Option<SrtpKeys>) {
        let mut slot = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = keys;
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// How many times keys were set; 0 while never.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The keys now, with their generation.
    pub fn current(&self) -> (u64, Option<SrtpKeys>) {
        let slot = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (self.generation(), slot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key(fill: u8) -> MasterKey {
        let mut b = [0u8; MASTER_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = fill.wrapping_add(i as u8);
        }
        MasterKey::from_bytes(b)
    }

    fn keys(suite: CryptoSuite) -> SrtpKeys {
        SrtpKeys {
            suite,
            local: key(1),
            remote: key(100),
        }
    }

    /// The other end of the call: the same keys, swapped.
    fn peer(k: &SrtpKeys) -> SrtpKeys {
        SrtpKeys {
            suite: k.suite,
            local: k.remote.clone(),
            remote: k.local.clone(),
        }
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn a_packet_far_behind_the_window_is_sealed_and_refused_without_a_panic() {
        // Found by fuzzing: marking an index 64 or more behind the highest shifted past the
        // window's 64 bits (the sender resending an old sequence number).
        let k = keys(CryptoSuite::AesCm128HmacSha1_80);
        let mut tx = SrtpContext::new(&k).unwrap();
        let mut rx = SrtpContext::new(&peer(&k)).unwrap();
        let mut out = [0u8; 64];
        for seq in [1000u16, 1100, 900] {
            let n = tx.protect_rtp(&rtp(seq, 5, b"abcd"), &mut out).unwrap();
            let opened = rx.unprotect_rtp(&mut out[..n]);
            if seq == 900 {
                assert_eq!(opened, Err(SrtpError::Replayed));
            } else {
                assert_eq!(opened, Ok(n - 10));
            }
        }
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let master: [u8; MASTER_LEN] =
            hex("E1F97A0D3E018BE0D64FA32C06DE4139 0EC675AD498AFEEBB6960B3AABE6")
                .try_into()
                .unwrap();
        let master = MasterKey::from_bytes(master);
        let crypto = provider().unwrap();
        let mut enc = [0u8; 16];
        kdf(crypto, &master, 0, &mut enc).unwrap();
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        kdf(crypto, &master, 2, &mut salt).unwrap();
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        kdf(crypto, &master, 1, &mut auth).unwrap();
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn rfc3711_b2_counter_mode_keystream() {
        let crypto = provider().unwrap();
        let mut cipher = crypto
            .new_stream_cipher(
                StreamCipherAlgorithm::Aes128Ctr,
                &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
            )
            .unwrap();
        let salt: [u8; SALT_LEN] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let iv = iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut stream = [0u8; 48];
        cipher.apply_keystream(&iv, &mut stream).unwrap();
        assert_eq!(
            stream.to_vec(),
            hex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB \
                 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
    }

    #[test]
    fn round_trip_both_suites_and_the_tag_length() {
        for suite in CryptoSuite::ALL {
            let k = keys(suite);
            let mut relay = SrtpContext::new(&k).unwrap();
            let mut caller = SrtpContext::new(&peer(&k)).unwrap();
            let mut out = [0u8; 1500];
            for seq in [10u16, 11, 12, 14, 13] {
                let plain = rtp(seq, 0x1234, &[seq as u8; 160]);
                let n = relay.protect_rtp(&plain, &mut out).unwrap();
                assert_eq!(n, plain.len() + suite.rtp_tag_len());
                assert_eq!(out[..12], plain[..12], "the header stays clear");
                assert_ne!(out[12..172], plain[12..], "the payload does not");
                let m = caller.unprotect_rtp(&mut out[..n]).unwrap();
                assert_eq!(&out[..m], &plain[..]);
            }
        }
    }

    #[test]
    fn a_bad_tag_a_replay_and_garbage_are_refused_without_harm() {
        let k = keys(CryptoSuite::AesCm128HmacSha1_80);
        let mut relay = SrtpContext::new(&k).unwrap();
        let mut caller = SrtpContext::new(&peer(&k)).unwrap();
        let mut out = [0u8; 1500];
        let plain = rtp(7, 9, &[0x55; 160]);
        let n = caller.protect_rtp(&plain, &mut out).unwrap();
        let good = out[..n].to_vec();
        let mut bad = good.clone();
        bad[n - 1] ^= 1;
        assert_eq!(relay.unprotect_rtp(&mut bad), Err(SrtpError::AuthFailed));
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        assert_eq!(
            relay.unprotect_rtp(&mut flipped),
            Err(SrtpError::AuthFailed)
        );
        let mut again = good.clone();
        assert_eq!(relay.unprotect_rtp(&mut again), Ok(plain.len()));
        let mut replay = good.clone();
        assert_eq!(relay.unprotect_rtp(&mut replay), Err(SrtpError::Replayed));
        for junk in [&[][..], &[0x80; 5], &[0x80; 21], &[0x00; 40], &[0x9F; 40]] {
            let mut j = junk.to_vec();
            assert!(relay.unprotect_rtp(&mut j).is_err(), "{junk:?}");
            let mut j = junk.to_vec();
            assert!(relay.unprotect_rtcp(&mut j).is_err(), "{junk:?}");
        }
        for junk in [&[][..], &[0x80; 5], &[0x00; 40], &[0x9F; 40]] {
            assert!(relay.protect_rtp(junk, &mut out).is_err(), "{junk:?}");
            if junk.first() != Some(&0x9F) {
                assert!(relay.protect_rtcp(junk, &mut out).is_err(), "{junk:?}");
            }
        }
        assert!(
            relay.protect_rtp(&plain, &mut out[..170]).is_err(),
            "no room for the tag"
        );
        // A forged packet from a new SSRC does not displace the stream.
        let mut forged = rtp(8, 10, &[0; 170]);
        assert_eq!(relay.unprotect_rtp(&mut forged), Err(SrtpError::AuthFailed));
        let n = caller.protect_rtp(&rtp(8, 9, &[1; 160]), &mut out).unwrap();
        assert!(relay.unprotect_rtp(&mut out[..n]).is_ok());
    }

    #[test]
    fn replays_of_an_earlier_ssrc_are_refused() {
        let k = keys(CryptoSuite::AesCm128HmacSha1_80);
        let mut relay = SrtpContext::new(&k).unwrap();
        let mut caller = SrtpContext::new(&peer(&k)).unwrap();
        let mut out = [0u8; 1500];
        let mut sent = Vec::new();
        // SSRCs 1, 2, ... each send three packets, one after the other (a caller changing
        // SSRC on every re-INVITE); every packet is kept for a replay.
        for ssrc in 1..=SSRC_HISTORY as u32 + 1 {
            for seq in 1..=3u16 {
                let n = caller
                    .protect_rtp(&rtp(seq, ssrc, &[ssrc as u8; 160]), &mut out)
                    .unwrap();
                let packet = out[..n].to_vec();
                assert!(relay.unprotect_rtp(&mut packet.clone()).is_ok());
                sent.push((ssrc, packet));
            }
        }
        // Every SSRC still remembered refuses its old packets, the current one's included.
        let newest = SSRC_HISTORY as u32 + 1;
        // (The very first one is forgotten: the history is bounded.)
        for (ssrc, packet) in sent
            .iter()
            .filter(|(s, _)| *s > newest - SSRC_HISTORY as u32)
        {
            let r = relay.unprotect_rtp(&mut packet.clone());
            assert_eq!(r, Err(SrtpError::Replayed), "ssrc {ssrc}");
        }
        // An earlier SSRC that comes back goes on where it was.
        let back = newest - 1;
        let n = caller
            .protect_rtp(&rtp(4, back, &[0; 160]), &mut out)
            .unwrap();
        assert!(relay.unprotect_rtp(&mut out[..n]).is_ok());
        let (_, old) = sent.iter().find(|(s, _)| *s == back).unwrap();
        assert_eq!(
            relay.unprotect_rtp(&mut old.clone()),
            Err(SrtpError::Replayed)
        );

        // SRTCP the same way: RTCP of an earlier SSRC is not taken twice.
        let mut rtcp_sent = Vec::new();
        for ssrc in [7u32, 8, 7] {
            let rr = [0x80, 201, 0, 1, 0, 0, 0, ssrc as u8];
            let n = caller.protect_rtcp(&rr, &mut out).unwrap();
            let packet = out[..n].to_vec();
            assert!(relay.unprotect_rtcp(&mut packet.clone()).is_ok());
            rtcp_sent.push(packet);
        }
        for packet in &rtcp_sent {
            assert_eq!(
                relay.unprotect_rtcp(&mut packet.clone()),
                Err(SrtpError::Replayed)
            );
        }
    }

    #[test]
    fn the_index_follows_sequence_number_wrap() {
        let k = keys(CryptoSuite::AesCm128HmacSha1_32);
        let mut relay = SrtpContext::new(&k).unwrap();
        let mut caller = SrtpContext::new(&peer(&k)).unwrap();
        let mut out = [0u8; 1500];
        let mut seq = 65530u16;
        for _ in 0..12 {
            let plain = rtp(seq, 77, &[seq as u8; 20]);
            let n = caller.protect_rtp(&plain, &mut out).unwrap();
            let m = relay.unprotect_rtp(&mut out[..n]).unwrap();
            assert_eq!(&out[..m], &plain[..], "seq {seq}");
            seq = seq.wrapping_add(1);
        }
        assert_eq!(
            relay.rx.find(77).unwrap().window.top >> 16,
            1,
            "rollover counter 1"
        );
        assert_eq!(estimate_index(0x1_0002, 65535), Some(0xFFFF));
        assert_eq!(estimate_index(0xFFF0, 3), Some(0x1_0003));
        assert_eq!(estimate_index(5, 65000), None, "before the stream began");
    }

    #[test]
    fn rtcp_round_trip_replay_and_tamper() {
        let k = keys(CryptoSuite::AesCm128HmacSha1_32);
        let mut relay = SrtpContext::new(&k).unwrap();
        let mut caller = SrtpContext::new(&peer(&k)).unwrap();
        // A receiver report with one block: header, SSRC, 24 bytes.
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 42];
        rr.extend_from_slice(&[9u8; 24]);
        let mut out = [0u8; 1500];
        let n = relay.protect_rtcp(&rr, &mut out).unwrap();
        assert_eq!(n, rr.len() + RTCP_OVERHEAD);
        assert_eq!(out[..8], rr[..8]);
        assert_ne!(out[8..32], rr[8..]);
        let sent = out[..n].to_vec();
        let mut got = sent.clone();
        assert_eq!(caller.unprotect_rtcp(&mut got), Ok(rr.len()));
        assert_eq!(&got[..rr.len()], &rr[..]);
        let mut again = sent.clone();
        assert_eq!(caller.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
        let n = relay.protect_rtcp(&rr, &mut out).unwrap();
        out[n - 1] ^= 0x80;
        assert_eq!(
            caller.unprotect_rtcp(&mut out[..n]),
            Err(SrtpError::AuthFailed)
        );
    }

    #[test]
    fn keys_decode_and_never_print() {
        let k = MasterKey::random();
        let text = k.to_inline();
        assert_eq!(text.len(), 40);
        assert_eq!(MasterKey::from_inline(&text), Ok(k.clone()));
        assert_ne!(MasterKey::random(), k);
        for bad in [
            "",
            "abc",
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            &text[..39],
        ] {
            assert_eq!(MasterKey::from_inline(bad), Err(KeyError::Malformed));
        }
        let longer = format!("{text}AAAA");
        assert_eq!(MasterKey::from_inline(&longer), Err(KeyError::Malformed));
        let all = SrtpKeys {
            suite: CryptoSuite::AesCm128HmacSha1_80,
            local: k.clone(),
            remote: k.clone(),
        };
        let shown = format!("{all:?} {:?}", SrtpContext::new(&all).unwrap());
        assert!(!shown.contains(&text), "{shown}");
        assert!(!shown.contains(&format!("{:?}", &k.bytes[..4])), "{shown}");
        assert!(shown.contains("redacted"));
    }

    /// Packet for packet against `rtc-srtp`, the webrtc line's own SRTP.
    #[test]
    fn interoperates_with_rtc_srtp() {
        use rtc_srtp::context::Context;
        use rtc_srtp::protection_profile::ProtectionProfile;
        let provider = rtc_srtp::crypto::default_provider().unwrap();
        for (suite, profile) in [
            (
                CryptoSuite::AesCm128HmacSha1_80,
                ProtectionProfile::Aes128CmHmacSha1_80,
            ),
            (
                CryptoSuite::AesCm128HmacSha1_32,
                ProtectionProfile::Aes128CmHmacSha1_32,
            ),
        ] {
            let k = keys(suite);
            let mut ours = SrtpContext::new(&k).unwrap();
            let context = |m: &MasterKey| {
                Context::new(m.key(), m.salt(), profile, None, None, provider.crypto()).unwrap()
            };
            let mut their_rx = context(&k.local);
            let mut their_tx = context(&k.remote);
            let mut out = [0u8; 1500];
            for seq in (65500u16..=65535).chain(0..40) {
                let plain = rtp(seq, 0xCAFE, &[seq as u8; 160]);
                let n = ours.protect_rtp(&plain, &mut out).unwrap();
                let theirs = their_rx.decrypt_rtp(&out[..n]).unwrap();
                assert_eq!(&theirs[..], &plain[..], "ours to theirs, seq {seq}");
                let mut back = their_tx.encrypt_rtp(&plain).unwrap().to_vec();
                let m = ours.unprotect_rtp(&mut back).unwrap();
                assert_eq!(&back[..m], &plain[..], "theirs to ours, seq {seq}");
            }
            let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0xCA, 0xFE];
            sr.extend_from_slice(&[3u8; 20]);
            for _ in 0..3 {
                let n = ours.protect_rtcp(&sr, &mut out).unwrap();
                let theirs = their_rx.decrypt_rtcp(&out[..n]).unwrap();
                assert_eq!(&theirs[..], &sr[..]);
                let mut back = their_tx.encrypt_rtcp(&sr).unwrap().to_vec();
                let m = ours.unprotect_rtcp(&mut back).unwrap();
                assert_eq!(&back[..m], &sr[..]);
            }
        }
    }

    #[test]
    fn the_slot_hands_over_keys_and_counts_changes() {
        let slot = KeySlot::default();
        assert_eq!(slot.generation(), 0);
        let other = slot.clone();
        other.set(Some(keys(CryptoSuite::AesCm128HmacSha1_80)));
        let (g, k) = slot.current();
        assert_eq!(g, 1);
        assert_eq!(k, Some(keys(CryptoSuite::AesCm128HmacSha1_80)));
        other.set(None);
        assert_eq!(slot.current(), (2, None));
        assert!(!format!("{slot:?}").contains("MasterKey"));
    }
}
