//! SDP offer/answer for the phone leg (RFC 3264), IO-free.
//!
//! The relay speaks PCMU and PCMA at 8 kHz with 20 ms packets, plus RFC 4733 telephone-event.
//! The caller's first supported codec wins. Offers are parsed with `rtc-sdp`; the answer is
//! written here, since it is a fixed, small shape.

use std::fmt::Write as _;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use rtc_sdp::description::session::SessionDescription;

/// A G.711 codec the relay can carry on the phone leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl Codec {
    /// The encoding name in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
    /// The static RTP payload type (RFC 3551).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    /// The payload byte of digital silence.
    pub fn silence_byte(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }
}

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
    /// An audio stream, but nothing the relay can carry (codec or transport profile).
    #[error("no common codec: the relay takes PCMU or PCMA over RTP/AVP")]
    NoCommonCodec,
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
    pub codec: Codec,
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
}

/// Parses an offer and picks what the relay will use.
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
        if proto != "RTP/AVP" && proto != "RTP/AVPF" {
            continue;
        }
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
            let Ok(pt) = f.parse::<u8>() else { continue };
            let codec = match rtpmap(pt) {
                Some((name, 8000)) if name == "PCMU" => Some(Codec::Pcmu),
                Some((name, 8000)) if name == "PCMA" => Some(Codec::Pcma),
                Some((name, 8000)) if name == "TELEPHONE-EVENT" => {
                    dtmf.get_or_insert(pt);
                    None
                }
                Some(_) => None,
                None if pt == 0 => Some(Codec::Pcmu),
                None if pt == 8 => Some(Codec::Pcma),
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
/// every change (RFC 3264 section 8).
#[derive(Debug, Clone)]
pub struct LocalSdp {
    session_id: u64,
    version: u64,
    ip: IpAddr,
    rtp_port: u16,
    last: Option<String>,
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
            let _ = write!(s, "m=audio {} RTP/AVP {}", self.rtp_port, n.payload_type);
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
        assert_eq!(n.codec, Codec::Pcma);
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
        assert_eq!(n.codec, Codec::Pcmu);
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
        assert_eq!(back.codec, Codec::Pcmu);
        assert_eq!(back.remote_rtp, Some("192.0.2.1:20000".parse().unwrap()));
    }

    #[test]
    fn dynamic_payload_type_for_g711_is_kept() {
        let n = negotiate(offer("m=audio 4000 RTP/AVP 97\r\na=rtpmap:97 pcma/8000\r\n").as_bytes())
            .unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 97));
    }
}
