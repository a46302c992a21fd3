//! SDP offer/answer for the phone leg (RFC 3264), IO-free.
//!
//! The relay speaks PCMU and PCMA at 8 kHz with 20 ms packets, plus RFC 4733 telephone-event.
//! The caller's first supported codec wins. Offers are parsed with `rtc-sdp`; the answer is
//! written here, since it is a fixed, small shape.
//!
//! SRTP with SDES keys (RFC 4568): an `RTP/SAVP` (or `RTP/SAVPF`) offer is answered in kind
//! when one of its `a=crypto` lines has a suite the relay speaks (`AES_CM_128_HMAC_SHA1_80`
//! preferred, then `AES_CM_128_HMAC_SHA1_32`) and a single inline key without MKI; the answer
//! carries one `a=crypto` line with that line's tag and a fresh random key of the relay's.
//! A secure offer with no usable line is refused like one with no common codec (488).

use std::fmt::Write as _;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use rtc_sdp::description::session::SessionDescription;

use crate::media::g711::Law;
use crate::media::srtp::{CryptoSuite, MasterKey, SrtpKeys};

/// Media direction (RFC 3264 section 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The offerer only sends.
    SendOnly,
    /// The offerer only receives.
    RecvOnly,
    /// Neither way (hold).
    Inactive,
}

impl Direction {
    /// The answerer's direction for an offered one.
    pub fn mirror(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
    /// The attribute name.
    pub fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    /// Whether the relay may send media in this (its own) direction.
    pub fn relay_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// Why an offer cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// Not parseable as SDP.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No audio stream at all.
    #[error("no audio stream offered")]
    NoAudio,
    /// An audio stream, but nothing the relay can carry (codec, transport profile, or, for
    /// RTP/SAVP, no usable `a=crypto` line).
    #[error(
        "no common codec: the relay takes PCMU or PCMA over RTP/AVP, or over RTP/SAVP with \
         an AES_CM_128_HMAC_SHA1_80 or _32 inline key"
    )]
    NoCommonCodec,
}

/// Why an `a=crypto` line is not used. Never quotes the line: it holds a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoAttrError {
    /// Not what RFC 4568 section 9.1 describes.
    #[error("malformed a=crypto line: {0}")]
    Malformed(&'static str),
    /// Well formed, but asks for something the relay does not do.
    #[error("unsupported a=crypto line: {0}")]
    Unsupported(&'static str),
}

/// One usable `a=crypto` line of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoOffer {
    /// The line's tag, repeated in the answer.
    pub tag: u32,
    /// Its suite.
    pub suite: CryptoSuite,
    /// The offerer's master key and salt.
    pub key: MasterKey,
}

/// Parses the value of an `a=crypto` attribute (what follows `a=crypto:`).
///
/// Accepted: a tag of up to 9 digits, a suite the relay speaks, one `inline:` key of 30 bytes
/// with an optional lifetime (`2^n` or a number; not enforced: a call ends long before), and
/// the session parameters `KDR=0`, `WSH=n` and any starting with `-`. Refused: several keys,
/// an MKI, any other key derivation rate, unencrypted or unauthenticated SRTP, FEC, and
/// unknown parameters.
pub fn parse_crypto(value: &str) -> Result<CryptoOffer, CryptoAttrError> {
    use CryptoAttrError::{Malformed, Unsupported};
    let mut fields = value.split_ascii_whitespace();
    let tag = fields.next().ok_or(Malformed("no tag"))?;
    if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed("the tag is not 1 to 9 digits"));
    }
    let tag: u32 = tag.parse().map_err(|_| Malformed("bad tag"))?;
    let suite = fields.next().ok_or(Malformed("no crypto suite"))?;
    let suite = CryptoSuite::from_name(suite).ok_or(Unsupported("crypto suite"))?;
    let key_params = fields.next().ok_or(Malformed("no key parameters"))?;
    if key_params.contains(';') {
        return Err(Unsupported("more than one key"));
    }
    let inline = key_params
        .strip_prefix("inline:")
        .ok_or(Unsupported("key method other than inline"))?;
    let mut parts = inline.split('|');
    let key = parts.next().unwrap_or_default();
    let key = MasterKey::from_inline(key).map_err(|_| Malformed("the key is not 30 bytes"))?;
    for (i, part) in parts.enumerate() {
        if i >= 2 {
            return Err(Malformed("too many key parameters"));
        }
        if part.contains(':') {
            return Err(Unsupported("MKI"));
        }
        if !valid_lifetime(part) {
            return Err(Malformed("bad key lifetime"));
        }
    }
    for param in fields {
        if param.starts_with('-') {
            continue;
        }
        let (name, val) = param.split_once('=').unwrap_or((param, ""));
        match name {
            "KDR" if val == "0" => {}
            "KDR" if !val.is_empty() && val.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(Unsupported("key derivation rate other than 0"));
            }
            "WSH" if val.parse::<u32>().is_ok_and(|w| w >= 64) => {}
            "KDR" | "WSH" => return Err(Malformed("bad session parameter value")),
            "UNENCRYPTED_SRTP" | "UNENCRYPTED_SRTCP" | "UNAUTHENTICATED_SRTP" => {
                return Err(Unsupported("unencrypted or unauthenticated SRTP"));
            }
            "FEC_ORDER" | "FEC_KEY" => return Err(Unsupported("FEC")),
            _ => return Err(Unsupported("session parameter")),
        }
    }
    Ok(CryptoOffer { tag, suite, key })
}

/// A key lifetime: `2^n` (n from 1 to 48) or a decimal count of packets.
fn valid_lifetime(s: &str) -> bool {
    match s.strip_prefix("2^") {
        Some(exp) => exp.parse::<u8>().is_ok_and(|e| (1..=48).contains(&e)),
        None => {
            !s.is_empty()
                && s.len() <= 15
                && s.bytes().all(|b| b.is_ascii_digit())
                && s.parse::<u64>().is_ok_and(|n| n > 0)
        }
    }
}

/// SRTP agreed for the phone leg: the offer line's tag and both sides' keys. Its `Debug`
/// shows no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpAgreement {
    /// The tag of the offer's `a=crypto` line that was chosen.
    pub tag: u32,
    /// The suite, the relay's key (in our answer) and the caller's (from the offer).
    pub keys: SrtpKeys,
}

/// One m= line of an offer, as far as the answer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedStream {
    /// `audio`, `video`, ...
    pub media: String,
    /// The transport profile, e.g. `RTP/AVP`.
    pub proto: String,
    /// The format tokens, in the offerer's order.
    pub formats: Vec<String>,
}

/// What the relay agreed to for the phone leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The voice codec.
    pub codec: Law,
    /// Its payload type as offered (static 0/8, or the offerer's dynamic number).
    pub payload_type: u8,
    /// telephone-event's payload type, when offered at 8 kHz.
    pub dtmf_payload_type: Option<u8>,
    /// Where to send RTP; `None` when the offer says not to (port 0 or 0.0.0.0).
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP (`a=rtcp` or RTP port + 1).
    pub remote_rtcp: Option<SocketAddr>,
    /// The relay's own direction (the offer's, mirrored).
    pub direction: Direction,
    /// Index of the chosen m= line among all of the offer's.
    pub stream_index: usize,
    /// Every m= line of the offer, so the answer has as many (RFC 3264 section 6).
    pub streams: Vec<OfferedStream>,
    /// SRTP keys when the chosen stream is RTP/SAVP; `None` for plain RTP.
    pub srtp: Option<SrtpAgreement>,
}

impl Negotiated {
    /// Keeps the relay's key of `prev` when this (re-)offer's crypto is the same line with
    /// the same key, so an answer that changes nothing else changes no key either. Any other
    /// change leaves the fresh key in place: the leg then starts new SRTP contexts, and a
    /// context never starts over with a key already used.
    pub fn keep_local_key(&mut self, prev: &Negotiated) {
        if let (Some(new), Some(old)) = (self.srtp.as_mut(), prev.srtp.as_ref()) {
            if new.tag == old.tag
                && new.keys.suite == old.keys.suite
                && new.keys.remote == old.keys.remote
            {
                new.keys.local = old.keys.local.clone();
            }
        }
    }
}

/// Parses an offer and picks what the relay will use; for an SRTP offer, draws the relay's
/// own master key.
pub fn negotiate(body: &[u8]) -> Result<Negotiated, SdpError> {
    if body.is_empty() {
        return Err(SdpError::Malformed("empty body".into()));
    }
    // rtc-sdp is strict about line endings and a trailing newline; normalise both so that
    // LF-only offers and offers missing the final CRLF are accepted.
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8".into()))?;
    let mut norm = String::with_capacity(text.len() + 2);
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if !line.is_empty() {
            norm.push_str(line);
            norm.push_str("\r\n");
        }
    }
    let sd = SessionDescription::unmarshal(&mut Cursor::new(norm.as_bytes()))
        .map_err(|e| SdpError::Malformed(e.to_string()))?;

    let session_ip = sd
        .connection_information
        .as_ref()
        .and_then(|c| c.address.as_ref())
        .and_then(|a| a.address.parse::<IpAddr>().ok());
    let session_dir = direction_of(sd.attributes.iter().map(|a| a.key.as_str()));

    let streams: Vec<OfferedStream> = sd
        .media_descriptions
        .iter()
        .map(|m| OfferedStream {
            media: m.media_name.media.clone(),
            proto: m.media_name.protos.join("/"),
            formats: m.media_name.formats.clone(),
        })
        .collect();
    if !streams.iter().any(|s| s.media == "audio") {
        return Err(SdpError::NoAudio);
    }

    for (index, m) in sd.media_descriptions.iter().enumerate() {
        if m.media_name.media != "audio" || m.media_name.port.value == 0 {
            continue;
        }
        let proto = m.media_name.protos.join("/");
        let secure = matches!(proto.as_str(), "RTP/SAVP" | "RTP/SAVPF");
        if !secure && proto != "RTP/AVP" && proto != "RTP/AVPF" {
            continue;
        }
        let srtp = if secure {
            let offered: Vec<CryptoOffer> = m
                .attributes
                .iter()
                .filter(|a| a.key == "crypto")
                .filter_map(|a| a.value.as_deref())
                .filter_map(|v| parse_crypto(v).ok())
                .collect();
            let chosen = CryptoSuite::ALL
                .iter()
                .find_map(|s| offered.iter().find(|o| o.suite == *s));
            let Some(chosen) = chosen else {
                continue;
            };
            Some(SrtpAgreement {
                tag: chosen.tag,
                keys: SrtpKeys {
                    suite: chosen.suite,
                    local: MasterKey::random(),
                    remote: chosen.key.clone(),
                },
            })
        } else {
            None
        };
        let rtpmap = |pt: u8| -> Option<(String, u32)> {
            m.attributes
                .iter()
                .filter(|a| a.key == "rtpmap")
                .filter_map(|a| a.value.as_deref())
                .find_map(|v| {
                    let (num, rest) = v.split_once(' ')?;
                    if num.trim().parse::<u8>().ok()? != pt {
                        return None;
                    }
                    let mut parts = rest.trim().split('/');
                    let name = parts.next()?.to_ascii_uppercase();
                    let rate = parts.next()?.parse::<u32>().ok()?;
                    Some((name, rate))
                })
        };
        let mut chosen = None;
        let mut dtmf = None;
        for f in &m.media_name.formats {
            // RTP has 7 bits for the payload type (RFC 3550 5.1): a larger number can never
            // be sent, so such a format is not usable.
            let Some(pt) = f.parse::<u8>().ok().filter(|pt| *pt <= 127) else {
                continue;
            };
            let codec = match rtpmap(pt) {
                Some((name, 8000)) if name == "PCMU" => Some(Law::Mu),
                Some((name, 8000)) if name == "PCMA" => Some(Law::A),
                Some((name, 8000)) if name == "TELEPHONE-EVENT" => {
                    dtmf.get_or_insert(pt);
                    None
                }
                Some(_) => None,
                None if pt == 0 => Some(Law::Mu),
                None if pt == 8 => Some(Law::A),
                None => None,
            };
            if let (Some(c), None) = (codec, chosen) {
                chosen = Some((c, pt));
            }
        }
        let Some((codec, payload_type)) = chosen else {
            continue;
        };

        let ip = m
            .connection_information
            .as_ref()
            .and_then(|c| c.address.as_ref())
            .and_then(|a| a.address.parse::<IpAddr>().ok())
            .or(session_ip);
        let port = u16::try_from(m.media_name.port.value)
            .ok()
            .filter(|p| *p != 0);
        let remote_rtp = match (ip, port) {
            (Some(ip), Some(port)) if !ip.is_unspecified() => Some(SocketAddr::new(ip, port)),
            _ => None,
        };
        let remote_rtcp = remote_rtp.map(|rtp| {
            let explicit = m
                .attributes
                .iter()
                .find(|a| a.key == "rtcp")
                .and_then(|a| a.value.as_deref())
                .and_then(|v| v.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok());
            SocketAddr::new(rtp.ip(), explicit.unwrap_or(rtp.port().wrapping_add(1)))
        });
        let dir = direction_of(m.attributes.iter().map(|a| a.key.as_str()))
            .or(session_dir)
            .unwrap_or(Direction::SendRecv);
        // An old-style hold (c=0.0.0.0) means "do not send to me".
        let dir = if remote_rtp.is_none() && dir == Direction::SendRecv {
            Direction::SendOnly
        } else {
            dir
        };
        return Ok(Negotiated {
            codec,
            payload_type,
            dtmf_payload_type: dtmf,
            remote_rtp,
            remote_rtcp,
            direction: dir.mirror(),
            stream_index: index,
            streams,
            srtp,
        });
    }
    Err(SdpError::NoCommonCodec)
}

fn direction_of<'a>(keys: impl Iterator<Item = &'a str>) -> Option<Direction> {
    let mut found = None;
    for k in keys {
        found = match k {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => continue,
        };
    }
    found
}

/// The relay's side of one call's SDP: stable across re-INVITEs, with the version bumped on
/// every change (RFC 3264 section 8). Its `Debug` leaves out the last answer, which may hold
/// the relay's SRTP key.
#[derive(Clone)]
pub struct LocalSdp {
    session_id: u64,
    version: u64,
    ip: IpAddr,
    rtp_port: u16,
    last: Option<String>,
}

impl std::fmt::Debug for LocalSdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSdp")
            .field("session_id", &self.session_id)
            .field("version", &self.version)
            .field("ip", &self.ip)
            .field("rtp_port", &self.rtp_port)
            .finish_non_exhaustive()
    }
}

impl LocalSdp {
    /// The relay's address and RTP port for one call; `session_id` should be random.
    pub fn new(ip: IpAddr, rtp_port: u16, session_id: u64) -> Self {
        Self {
            session_id,
            version: 0,
            ip,
            rtp_port,
            last: None,
        }
    }

    /// The relay's offer for a call it places: PCMU and PCMA (only `only` when given) and
    /// telephone-event, 20 ms, sendrecv, plain RTP.
    pub fn offer(&mut self, only: Option<Law>) -> String {
        let ipv = if self.ip.is_ipv4() { "IP4" } else { "IP6" };
        let (formats, maps) = match only {
            None => ("0 8", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"),
            Some(Law::Mu) => ("0", "a=rtpmap:0 PCMU/8000\r\n"),
            Some(Law::A) => ("8", "a=rtpmap:8 PCMA/8000\r\n"),
        };
        format!(
            "v=0\r\no=voxrelay {} {} IN {ipv} {}\r\ns=voxrelay\r\nc=IN {ipv} {}\r\nt=0 0\r\n\
             m=audio {} RTP/AVP {formats} 101\r\n{maps}\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
            self.session_id, self.version, self.ip, self.ip, self.rtp_port
        )
    }

    /// The answer to an offer; the o= version goes up only when the body changes.
    pub fn answer(&mut self, n: &Negotiated) -> String {
        let body = self.render(n, self.version);
        match &self.last {
            Some(prev) if *prev == body => body,
            Some(_) => {
                self.version += 1;
                let body = self.render(n, self.version);
                self.last = Some(body.clone());
                body
            }
            None => {
                self.last = Some(body.clone());
                body
            }
        }
    }

    fn render(&self, n: &Negotiated, version: u64) -> String {
        let ipv = if self.ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut s = String::with_capacity(320);
        let _ = write!(
            s,
            "v=0\r\no=voxrelay {} {} IN {ipv} {}\r\ns=voxrelay\r\nc=IN {ipv} {}\r\nt=0 0\r\n",
            self.session_id, version, self.ip, self.ip
        );
        for (i, st) in n.streams.iter().enumerate() {
            if i != n.stream_index {
                // Declined stream: same media and profile, port 0, one of its formats.
                let fmt = st.formats.first().map(String::as_str).unwrap_or("0");
                let _ = write!(s, "m={} 0 {} {}\r\n", st.media, st.proto, fmt);
                continue;
            }
            let proto = match (&n.srtp, n.streams.get(i)) {
                (Some(_), Some(st)) => st.proto.as_str(),
                _ => "RTP/AVP",
            };
            let _ = write!(s, "m=audio {} {proto} {}", self.rtp_port, n.payload_type);
            if let Some(d) = n.dtmf_payload_type {
                let _ = write!(s, " {d}");
            }
            let _ = write!(
                s,
                "\r\na=rtpmap:{} {}/8000\r\n",
                n.payload_type,
                n.codec.name()
            );
            if let Some(d) = n.dtmf_payload_type {
                let _ = write!(
                    s,
                    "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"
                );
            }
            let _ = write!(
                s,
                "a=ptime:20\r\na=maxptime:60\r\na={}\r\n",
                n.direction.attr()
            );
            if let Some(c) = &n.srtp {
                let _ = write!(
                    s,
                    "a=crypto:{} {} inline:{}\r\n",
                    c.tag,
                    c.keys.suite.name(),
                    c.keys.local.to_inline()
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(m_lines: &str) -> String {
        format!("v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n{m_lines}")
    }

    #[test]
    fn the_callers_first_supported_codec_wins() {
        let n = negotiate(
            offer("m=audio 4000 RTP/AVP 18 8 0 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(n.codec, Law::A);
        assert_eq!(n.payload_type, 8);
        assert_eq!(n.dtmf_payload_type, Some(101));
        assert_eq!(n.remote_rtp, Some("10.0.0.5:4000".parse().unwrap()));
        assert_eq!(n.remote_rtcp, Some("10.0.0.5:4001".parse().unwrap()));
        assert_eq!(n.direction, Direction::SendRecv);
    }

    #[test]
    fn pcmu_without_rtpmap_and_lf_only_lines() {
        let n = negotiate(
            b"v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 5000 RTP/AVP 0\n",
        )
        .unwrap();
        assert_eq!(n.codec, Law::Mu);
        assert_eq!(n.dtmf_payload_type, None);
    }

    #[test]
    fn no_common_codec_is_refused() {
        let e =
            negotiate(offer("m=audio 4000 RTP/AVP 18 9\r\na=rtpmap:18 G729/8000\r\n").as_bytes());
        assert_eq!(e, Err(SdpError::NoCommonCodec));
        let e = negotiate(offer("m=audio 4000 RTP/SAVP 0\r\n").as_bytes());
        assert_eq!(e, Err(SdpError::NoCommonCodec));
        let e = negotiate(offer("m=video 4000 RTP/AVP 96\r\n").as_bytes());
        assert_eq!(e, Err(SdpError::NoAudio));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"hello",
            b"v=0\r\nm=audio x RTP/AVP 0\r\n",
            b"m=\r\n",
        ] {
            assert!(negotiate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hold_and_resume_mirror_the_direction() {
        let n = negotiate(offer("m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n").as_bytes()).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(!n.direction.relay_sends());
        let n = negotiate(offer("m=audio 4000 RTP/AVP 0\r\na=inactive\r\n").as_bytes()).unwrap();
        assert_eq!(n.direction, Direction::Inactive);
        let old_style = "v=0\r\no=- 1 2 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let n = negotiate(old_style.as_bytes()).unwrap();
        assert_eq!(n.remote_rtp, None);
        assert_eq!(n.direction, Direction::RecvOnly);
    }

    #[test]
    fn the_answer_keeps_every_m_line_and_bumps_the_version_on_change() {
        let n = negotiate(
            offer("m=video 6000 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut local = LocalSdp::new("192.0.2.1".parse().unwrap(), 20000, 42);
        let a1 = local.answer(&n);
        assert!(a1.contains("o=voxrelay 42 0 IN IP4 192.0.2.1"), "{a1}");
        assert!(a1.contains("c=IN IP4 192.0.2.1"));
        assert!(a1.contains("m=video 0 RTP/AVP 96"));
        assert!(a1.contains("m=audio 20000 RTP/AVP 0 101"));
        assert!(a1.contains("a=rtpmap:101 telephone-event/8000"));
        assert!(a1.contains("a=ptime:20"));
        assert!(a1.contains("a=sendrecv"));
        assert_eq!(
            local.answer(&n),
            a1,
            "same offer, same answer, same version"
        );
        let held = negotiate(
            offer("m=video 0 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n")
                .as_bytes(),
        )
        .unwrap();
        let a2 = local.answer(&held);
        assert!(a2.contains("o=voxrelay 42 1 "), "{a2}");
        assert!(a2.contains("a=recvonly"));
        // The answer parses as an offer would.
        let back = negotiate(a2.as_bytes()).unwrap();
        assert_eq!(back.codec, Law::Mu);
        assert_eq!(back.remote_rtp, Some("192.0.2.1:20000".parse().unwrap()));
    }

    #[test]
    fn dynamic_payload_type_for_g711_is_kept() {
        let n = negotiate(offer("m=audio 4000 RTP/AVP 97\r\na=rtpmap:97 pcma/8000\r\n").as_bytes())
            .unwrap();
        assert_eq!((n.codec, n.payload_type), (Law::A, 97));
    }

    #[test]
    fn payload_types_above_127_are_refused() {
        // Only a number RTP cannot carry: no usable codec (488).
        let r =
            negotiate(offer("m=audio 4000 RTP/AVP 200\r\na=rtpmap:200 PCMU/8000\r\n").as_bytes());
        assert_eq!(r.unwrap_err(), SdpError::NoCommonCodec);
        // 128 + 8 is not PCMA, and a telephone-event above 127 is not taken either.
        let n = negotiate(
            offer(
                "m=audio 4000 RTP/AVP 136 255 0\r\na=rtpmap:136 PCMA/8000\r\na=rtpmap:255 telephone-event/8000\r\n",
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!((n.codec, n.payload_type), (Law::Mu, 0));
        assert_eq!(n.dtmf_payload_type, None);
    }

    const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    const KEY_B: &str = "PS1uQCYmc1dVbXU+b2BrbG1vZnZxbT9Bb3FPbmZ5";

    fn savp(crypto: &str) -> String {
        offer(&format!(
            "m=audio 4000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{crypto}"
        ))
    }

    #[test]
    fn an_srtp_offer_is_answered_with_one_crypto_line_and_our_own_key() {
        let n = negotiate(
            savp(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}|2^31\r\n\
                 a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}\r\n"
            ))
            .as_bytes(),
        )
        .unwrap();
        let c = n.srtp.clone().expect("SRTP agreed");
        assert_eq!(c.tag, 7, "the 80-bit tag is preferred");
        assert_eq!(c.keys.suite, CryptoSuite::AesCm128HmacSha1_80);
        assert_eq!(c.keys.remote, MasterKey::from_inline(KEY_B).unwrap());
        assert_ne!(c.keys.local, c.keys.remote);
        let mut local = LocalSdp::new("192.0.2.1".parse().unwrap(), 20000, 42);
        let a = local.answer(&n);
        assert!(a.contains("m=audio 20000 RTP/SAVP 0 101\r\n"), "{a}");
        assert_eq!(a.matches("a=crypto:").count(), 1, "{a}");
        let ours = format!(
            "a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            c.keys.local.to_inline()
        );
        assert!(a.contains(&ours), "{a}");
        assert!(!a.contains(KEY_B), "the caller's key is not echoed");
        // The answer reads back as an SRTP offer holding our key.
        let back = negotiate(a.as_bytes()).unwrap();
        assert_eq!(back.srtp.unwrap().keys.remote, c.keys.local);
        // Only the 32-bit suite: it is taken.
        let n = negotiate(
            savp(&format!(
                "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\r\n"
            ))
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(n.srtp.unwrap().keys.suite, CryptoSuite::AesCm128HmacSha1_32);
    }

    #[test]
    fn an_srtp_offer_without_a_usable_crypto_line_is_refused() {
        for crypto in [
            String::new(),
            format!("a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}\r\n"),
            format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^31|1:4\r\n"),
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\n".into(),
            "a=crypto:x\r\na=crypto\r\n".into(),
        ] {
            assert_eq!(
                negotiate(savp(&crypto).as_bytes()),
                Err(SdpError::NoCommonCodec),
                "{crypto}"
            );
        }
        // A plain offer is unchanged, a crypto line on it ignored.
        let n = negotiate(
            offer(&format!(
                "m=audio 4000 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n"
            ))
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(n.srtp, None);
        let a = LocalSdp::new("192.0.2.1".parse().unwrap(), 20000, 1).answer(&n);
        assert!(
            a.contains("m=audio 20000 RTP/AVP 0\r\n") && !a.contains("crypto"),
            "{a}"
        );
        // A secure stream after an unusable one is found.
        let n = negotiate(
            offer(&format!(
                "m=audio 4000 RTP/SAVP 0\r\nm=audio 4002 RTP/SAVP 8\r\n\
                 a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n"
            ))
            .as_bytes(),
        )
        .unwrap();
        assert_eq!((n.stream_index, n.codec), (1, Law::A));
    }

    #[test]
    fn crypto_lines_parse_or_fail_cleanly() {
        let ok = |v: &str| parse_crypto(v).unwrap();
        let c = ok(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"));
        assert_eq!((c.tag, c.suite), (1, CryptoSuite::AesCm128HmacSha1_80));
        ok(&format!(
            "123456789 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}|2^31"
        ));
        ok(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|1048576"));
        ok(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} KDR=0 WSH=128 -X-VENDOR"
        ));
        ok(&format!("1  AES_CM_128_HMAC_SHA1_80\tinline:{KEY_A}  "));
        use CryptoAttrError::{Malformed, Unsupported};
        let cases: &[(String, CryptoAttrError)] = &[
            (String::new(), Malformed("no tag")),
            ("1".into(), Malformed("no crypto suite")),
            (
                "1 AES_CM_128_HMAC_SHA1_80".into(),
                Malformed("no key parameters"),
            ),
            (
                format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"),
                Malformed("the tag is not 1 to 9 digits"),
            ),
            (
                format!("-1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}"),
                Malformed("the tag is not 1 to 9 digits"),
            ),
            (
                format!("1 F8_128_HMAC_SHA1_80 inline:{KEY_A}"),
                Unsupported("crypto suite"),
            ),
            (
                format!("1 aes_cm_128_hmac_sha1_80 inline:{KEY_A}"),
                Unsupported("crypto suite"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 uri:{KEY_A}"),
                Unsupported("key method other than inline"),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:".into(),
                Malformed("the key is not 30 bytes"),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:YWJj".into(),
                Malformed("the key is not 30 bytes"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}AAAA"),
                Malformed("the key is not 30 bytes"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", "é".repeat(20)),
                Malformed("the key is not 30 bytes"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^31|1:1"),
                Unsupported("MKI"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|1:4"),
                Unsupported("MKI"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^31;inline:{KEY_B}|2^31"),
                Unsupported("more than one key"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^99"),
                Malformed("bad key lifetime"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|0"),
                Malformed("bad key lifetime"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|"),
                Malformed("bad key lifetime"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^31|2^31|2^31"),
                Malformed("too many key parameters"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} KDR=2"),
                Unsupported("key derivation rate other than 0"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} KDR=x"),
                Malformed("bad session parameter value"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} WSH=10"),
                Malformed("bad session parameter value"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} UNENCRYPTED_SRTP"),
                Unsupported("unencrypted or unauthenticated SRTP"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} FEC_ORDER=FEC_SRTP"),
                Unsupported("FEC"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A} SOMETHING"),
                Unsupported("session parameter"),
            ),
        ];
        for (line, want) in cases {
            let got = parse_crypto(line);
            assert_eq!(got.as_ref().err(), Some(want), "{line}");
            // Errors never quote the key.
            assert!(!want.to_string().contains(KEY_A));
        }
        // Every prefix and some byte soup: an answer, never a panic.
        let full = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^31 KDR=0");
        for end in 0..=full.len() {
            let _ = parse_crypto(&full[..end]);
        }
        for junk in [
            "\u{0}\u{1}",
            "9 | ; : ^ =",
            "1 AES_CM_128_HMAC_SHA1_80 inline:|||||",
            "1 AES_CM_128_HMAC_SHA1_80 inline:2^",
        ] {
            assert!(parse_crypto(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn keys_stay_out_of_debug_and_survive_an_unchanged_reoffer() {
        let body = savp(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}\r\n"
        ));
        let first = negotiate(body.as_bytes()).unwrap();
        let ours = first.srtp.as_ref().unwrap().keys.local.to_inline();
        let mut local = LocalSdp::new("192.0.2.1".parse().unwrap(), 20000, 42);
        let a1 = local.answer(&first);
        let shown = format!("{first:?} {local:?}");
        assert!(!shown.contains(KEY_A) && !shown.contains(&ours), "{shown}");

        // Same crypto again (a hold, say): same key of ours, same answer apart from direction.
        let mut again = negotiate(
            body.replace("a=rtpmap", "a=sendonly\r\na=rtpmap")
                .as_bytes(),
        )
        .unwrap();
        assert_ne!(
            again.srtp, first.srtp,
            "a fresh key is drawn for every offer"
        );
        again.keep_local_key(&first);
        assert_eq!(again.srtp, first.srtp);
        let a2 = local.answer(&again);
        assert!(a2.contains(&ours) && a2.contains("a=recvonly"), "{a2}");
        assert!(a1.contains(&ours));

        // New key from the caller: a new key of ours too.
        let mut rekeyed = negotiate(body.replace(KEY_A, KEY_B).as_bytes()).unwrap();
        rekeyed.keep_local_key(&first);
        let k = &rekeyed.srtp.as_ref().unwrap().keys;
        assert_eq!(k.remote, MasterKey::from_inline(KEY_B).unwrap());
        assert_ne!(k.local.to_inline(), ours);
    }
}
