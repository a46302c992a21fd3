//! Shapes the WebRTC answer like OpenAI's (extra `ufrag` candidate attribute, PCMU 0 and PCMA 8
//! listed beside Opus) and reads what the simulator needs from an offer.

/// The payload type the offer gives `opus/48000/2`, if any.
pub fn offered_opus_pt(offer: &str) -> Option<u8> {
    offer.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("a=rtpmap:")?;
        let (pt, codec) = rest.split_once(' ')?;
        codec
            .to_ascii_lowercase()
            .starts_with("opus/48000")
            .then(|| pt.parse().ok())
            .flatten()
    })
}

/// `maxplaybackrate` on the offer's `a=fmtp` line for payload type `pt` (RFC 7587 §6.1): the
/// highest audio rate the offerer wants to hear, in Hz.
pub fn offered_max_playback_rate(offer: &str, pt: u8) -> Option<u32> {
    let prefix = format!("a=fmtp:{pt} ");
    offer
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))?
        .split(';')
        .find_map(|p| {
            p.trim()
                .strip_prefix("maxplaybackrate=")?
                .trim()
                .parse()
                .ok()
        })
}

/// The first `a=ice-ufrag` value.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// Rewrites an answer the way OpenAI's look: candidates carry ` ufrag <ufrag>` and the audio
/// m-line lists PCMU (0) and PCMA (8) after the offered codecs. (The DTLS role, `active`, is
/// set on the peer connection, not here: rewriting it would break the handshake.)
pub fn shape_answer(answer: &str) -> String {
    let ufrag = ice_ufrag(answer).unwrap_or("").to_string();
    let mut out = String::with_capacity(answer.len() + 256);
    let mut in_audio = false;
    let mut audio_pts: Vec<String> = vec![];
    let mut pending_rtpmaps = false;
    let lines: Vec<&str> = answer.lines().map(str::trim_end).collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("m=") {
            in_audio = line.starts_with("m=audio");
            if in_audio {
                let mut parts: Vec<String> = line.split(' ').map(str::to_string).collect();
                audio_pts = parts.iter().skip(3).cloned().collect();
                for pt in ["0", "8"] {
                    if !audio_pts.iter().any(|p| p == pt) {
                        parts.push(pt.to_string());
                    }
                }
                pending_rtpmaps = true;
                out.push_str(&parts.join(" "));
                out.push_str("\r\n");
                continue;
            }
        }
        if line.starts_with("a=candidate:") && !line.contains(" ufrag ") && !ufrag.is_empty() {
            out.push_str(line);
            out.push_str(" ufrag ");
            out.push_str(&ufrag);
            out.push_str("\r\n");
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
        // after the audio section's last rtpmap, describe the G.711 payload types we added
        let next_is_rtpmap = lines.get(i + 1).is_some_and(|n| {
            n.starts_with("a=rtpmap:") || n.starts_with("a=fmtp:") || n.starts_with("a=rtcp-fb:")
        });
        if in_audio
            && pending_rtpmaps
            && line.starts_with("a=")
            && (line.starts_with("a=rtpmap:")
                || line.starts_with("a=fmtp:")
                || line.starts_with("a=rtcp-fb:"))
            && !next_is_rtpmap
        {
            for (pt, name) in [("0", "PCMU/8000"), ("8", "PCMA/8000")] {
                if !audio_pts.iter().any(|p| p == pt) {
                    out.push_str(&format!("a=rtpmap:{pt} {name}\r\n"));
                }
            }
            pending_rtpmaps = false;
        }
    }
    out
}

/// Points every candidate at `ip:port` (the ICE-never-completes fault).
pub fn redirect_candidates(sdp: &str, ip: &str, port: u16) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("a=candidate:") {
            let mut parts: Vec<String> = line.split(' ').map(str::to_string).collect();
            if parts.len() > 5 {
                parts[4] = ip.to_string();
                parts[5] = port.to_string();
            }
            out.push_str(&parts.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The address of the first UDP candidate, if one parses.
pub fn first_udp_candidate(sdp: &str) -> Option<std::net::SocketAddr> {
    sdp.lines().find_map(|l| {
        let parts: Vec<&str> = l.trim().strip_prefix("a=candidate:")?.split(' ').collect();
        if parts.len() < 6 || !parts[2].eq_ignore_ascii_case("udp") {
            return None;
        }
        let ip: std::net::IpAddr = parts[4].parse().ok()?;
        let port: u16 = parts[5].parse().ok()?;
        Some((ip, port).into())
    })
}

/// A `multipart/form-data` part.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `name` from `Content-Disposition`.
    pub name: String,
    /// The body.
    pub body: &'a [u8],
}

/// Splits a `multipart/form-data` body; `None` when it does not parse.
pub fn parse_multipart<'a>(content_type: &str, body: &'a [u8]) -> Option<Vec<Part<'a>>> {
    let boundary = content_type.split(';').find_map(|p| {
        p.trim()
            .strip_prefix("boundary=")
            .map(|b| b.trim_matches('"').to_string())
    })?;
    if boundary.is_empty() {
        return None;
    }
    let delim = format!("--{boundary}");
    let mut parts = vec![];
    let mut rest = body;
    let first = find(rest, delim.as_bytes())?;
    rest = &rest[first + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))?;
        let end = find(rest, delim.as_bytes())?;
        let part = &rest[..end];
        let part = part
            .strip_suffix(b"\r\n")
            .or_else(|| part.strip_suffix(b"\n"))
            .unwrap_or(part);
        let (head, body) = match find(part, b"\r\n\r\n") {
            Some(i) => (&part[..i], &part[i + 4..]),
            None => {
                let i = find(part, b"\n\n")?;
                (&part[..i], &part[i + 2..])
            }
        };
        let head = std::str::from_utf8(head).ok()?;
        let name = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            v.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix("name=")
                    .map(|n| n.trim_matches('"').to_string())
            })
        })?;
        parts.push(Part { name, body });
        rest = &rest[end + delim.len()..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_offers_max_playback_rate_for_its_opus_payload_type() {
        let offer = "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\n\
                     a=fmtp:111 minptime=10;useinbandfec=1; maxplaybackrate=8000;sprop-maxcapturerate=8000\r\n";
        assert_eq!(offered_max_playback_rate(offer, 111), Some(8000));
        assert_eq!(offered_max_playback_rate(offer, 0), None);
        let plain = "a=fmtp:111 minptime=10;useinbandfec=1\r\n";
        assert_eq!(offered_max_playback_rate(plain, 111), None);
        for junk in [
            "a=fmtp:111 maxplaybackrate=",
            "a=fmtp:111 maxplaybackrate=-5",
            "a=fmtp:111 ;;;",
        ] {
            assert_eq!(offered_max_playback_rate(junk, 111), None, "{junk}");
        }
    }

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=setup:active\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=sendrecv\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n";

    #[test]
    fn answers_are_shaped_like_openais() {
        let a = shape_answer(ANSWER);
        assert!(a.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\n"), "{a}");
        assert!(a.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"), "{a}");
        assert!(a.contains("typ host ufrag abcd\r\n"));
        assert_eq!(offered_opus_pt(ANSWER), Some(111));
        assert!(redirect_candidates(&a, "127.0.0.1", 9).contains(" 127.0.0.1 9 typ host"));
        assert_eq!(
            first_udp_candidate(&a),
            Some("127.0.0.1:50000".parse().unwrap())
        );
        assert_eq!(
            first_udp_candidate("a=candidate:1 1 udp 1 not-an-ip 5 typ host"),
            None
        );
        assert_eq!(
            first_udp_candidate("a=candidate:1 1 tcp 1 127.0.0.1 5 typ host"),
            None
        );
        assert_eq!(first_udp_candidate("a=candidate:1 1 udp"), None);
    }

    #[test]
    fn multipart_bodies_split_into_named_parts() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"sdp\"\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"session\"\r\n\r\n{\"type\":\"realtime\"}\r\n--XyZ--\r\n";
        let parts = parse_multipart("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(parts[0].name, "sdp");
        assert_eq!(parts[0].body, b"v=0\r\n");
        assert_eq!(parts[1].body, b"{\"type\":\"realtime\"}");
        assert!(parse_multipart("multipart/form-data; boundary=Q", body).is_none());
        assert!(parse_multipart("multipart/form-data", body).is_none());
        assert!(
            parse_multipart("multipart/form-data; boundary=XyZ", b"--XyZ\r\nno headers").is_none()
        );
    }
}
