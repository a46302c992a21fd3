//! A small SIP caller over UDP for the checks SIPp cannot make: what comes back on RTP,
//! how often a 200 OK is repeated, a call held open while other things happen.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A received RTP packet: (marker, pt, seq, ts, ssrc, payload).
pub type RtpPacket = (bool, u8, u16, u32, u32, Vec<u8>);

/// A parsed SIP message, as much as the tests need.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The first line.
    pub start: String,
    /// Headers as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Msg {
    /// Parses a datagram; `None` if it is not SIP.
    pub fn parse(data: &[u8]) -> Option<Msg> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Msg {
            start,
            headers,
            body: body.to_string(),
        })
    }
    /// The status code of a response (0 for a request).
    pub fn status(&self) -> u16 {
        if !self.start.starts_with("SIP/2.0 ") {
            return 0;
        }
        self.start[8..11].parse().unwrap_or(0)
    }
    /// A request's method.
    pub fn method(&self) -> &str {
        if self.status() != 0 {
            return "";
        }
        self.start.split(' ').next().unwrap_or("")
    }
    /// First header with this name (long or compact form).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        let compact = match name.as_str() {
            "via" => "v",
            "from" => "f",
            "to" => "t",
            "call-id" => "i",
            "contact" => "m",
            "content-type" => "c",
            "content-length" => "l",
            _ => "",
        };
        self.headers
            .iter()
            .find(|(k, _)| *k == name || k == compact)
            .map(|(_, v)| v.as_str())
    }
}

/// One caller: a SIP socket and an RTP socket on loopback.
pub struct Uac {
    /// The SIP socket.
    pub sip: UdpSocket,
    /// The RTP socket.
    pub rtp: UdpSocket,
    relay: SocketAddr,
    call_id: String,
    from_tag: String,
    to_tag: String,
    cseq: u32,
    branch: u32,
    /// The relay's RTP address from its SDP answer.
    pub relay_rtp: Option<SocketAddr>,
    /// The RTCP socket, named in the offer with `a=rtcp`.
    pub rtcp: UdpSocket,
    /// `o=` version of the next offer.
    sdp_version: u32,
    /// The user part of the Request-URI and To: the dialled number.
    pub dial: String,
    /// `a=crypto` lines (each with its CRLF) to offer: when set, the offer is RTP/SAVP.
    pub crypto: Option<String>,
}

impl Uac {
    /// A caller for the relay at `relay`.
    pub fn new(relay: SocketAddr) -> Uac {
        Self::new_from("127.0.0.1", relay)
    }

    /// A caller whose sockets are bound to `local_ip` (another loopback address, say).
    pub fn new_from(local_ip: &str, relay: SocketAddr) -> Uac {
        let sip = UdpSocket::bind((local_ip, 0)).unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let n = format!(
            "{}-{}",
            std::process::id(),
            sip.local_addr().unwrap().port()
        );
        Uac {
            sip,
            rtp,
            relay,
            call_id: format!("uac-{n}"),
            from_tag: format!("ft{n}"),
            to_tag: String::new(),
            cseq: 0,
            branch: 0,
            relay_rtp: None,
            rtcp,
            sdp_version: 1,
            dial: "echo".into(),
            crypto: None,
        }
    }

    fn local(&self) -> SocketAddr {
        self.sip.local_addr().unwrap()
    }

    /// Builds a request in this call.
    pub fn request(&mut self, method: &str, body: &str) -> String {
        if method != "ACK" && method != "CANCEL" {
            self.cseq += 1;
        }
        self.branch += 1;
        let l = self.local();
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        format!(
            "{method} sip:{d}@{r} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{c}-{b};rport\r\n\
             From: <sip:uac@{l}>;tag={ft}\r\nTo: <sip:{d}@{r}>{to_tag}\r\nCall-ID: {c}\r\n\
             CSeq: {cs} {method}\r\nContact: <sip:uac@{l}>\r\nMax-Forwards: 70\r\n{ct}\
             Content-Length: {len}\r\n\r\n{body}",
            r = self.relay,
            d = self.dial,
            c = self.call_id,
            b = self.branch,
            ft = self.from_tag,
            cs = self.cseq,
            len = body.len(),
        )
    }

    /// An SDP offer for PCMU and telephone-event from this caller's RTP and RTCP sockets
    /// (RTP/SAVP with [`Uac::crypto`]'s lines when set).
    pub fn offer(&mut self) -> String {
        let a = self.rtp.local_addr().unwrap();
        let c = self.rtcp.local_addr().unwrap();
        self.sdp_version += 1;
        let (proto, crypto) = match &self.crypto {
            Some(lines) => ("RTP/SAVP", lines.as_str()),
            None => ("RTP/AVP", ""),
        };
        format!(
            "v=0\r\no=uac 1 {} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=rtcp:{}\r\na=ptime:20\r\na=sendrecv\r\n{crypto}",
            self.sdp_version,
            a.port(),
            c.port()
        )
    }

    /// Moves this caller's media to new sockets and offers them in a re-INVITE; returns the
    /// final response (ACKed).
    pub fn reinvite_new_address(&mut self) -> Msg {
        self.rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        loop {
            let offer = self.offer();
            let req = self.request("INVITE", &offer);
            self.send_raw(req.as_bytes());
            let m = self.final_response("INVITE");
            self.ack();
            if m.status() != 491 {
                return m;
            }
            // 491 Request Pending: the re-INVITE overtook our ACK; retry later (RFC 3261
            // 14.1 asks 2.1-4 s of the Call-ID's owner).
            std::thread::sleep(Duration::from_millis(2100));
        }
    }

    /// The next RTCP datagram the relay sends.
    pub fn recv_rtcp(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.rtcp.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = self.rtcp.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    }

    /// Sends raw bytes to the relay's SIP port.
    pub fn send_raw(&self, data: &[u8]) {
        self.sip.send_to(data, self.relay).unwrap();
    }

    /// The next SIP message within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sip.set_read_timeout(Some(left)).unwrap();
            match self.sip.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(m) = Msg::parse(&buf[..n]) {
                        return Some(m);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Sends an INVITE with our offer and returns the final response (provisionals skipped).
    pub fn invite(&mut self) -> Msg {
        let offer = self.offer();
        let req = self.request("INVITE", &offer);
        self.send_raw(req.as_bytes());
        let m = self.final_response("INVITE");
        if let Some(to) = m.header("to") {
            if let Some(t) = to.split(";tag=").nth(1) {
                self.to_tag = t.split(';').next().unwrap_or("").to_string();
            }
        }
        self.relay_rtp = sdp_addr(&m.body);
        m
    }

    /// The final response to our latest `method` request (provisionals and others skipped).
    fn final_response(&self, method: &str) -> Msg {
        loop {
            let m = self
                .recv(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("a response to {method}"));
            if m.status() >= 200 && m.header("cseq").is_some_and(|c| c.ends_with(method)) {
                return m;
            }
        }
    }

    /// Acknowledges the 200 OK.
    pub fn ack(&mut self) {
        let req = self.request("ACK", "");
        self.send_raw(req.as_bytes());
    }

    /// Sends BYE and returns the response.
    pub fn bye(&mut self) -> Msg {
        let req = self.request("BYE", "");
        self.send_raw(req.as_bytes());
        self.final_response("BYE")
    }

    /// Answers a request from the relay with 200 OK.
    pub fn reply_ok(&self, req: &Msg) {
        let mut resp = String::from("SIP/2.0 200 OK\r\n");
        for name in ["via", "from", "to", "call-id", "cseq"] {
            let v = req.header(name).unwrap_or("");
            resp.push_str(&format!("{name}: {v}\r\n"));
        }
        resp.push_str("Content-Length: 0\r\n\r\n");
        self.send_raw(resp.as_bytes());
    }

    /// Sends an RTP packet to the relay's media address.
    pub fn send_rtp(&self, pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        self.rtp
            .send_to(&p, self.relay_rtp.expect("relay RTP address"))
            .unwrap();
    }

    /// Talks for `frames` 20 ms PCMU frames (SSRC 0xabcdef, sequence from 1000), each filled
    /// with a distinct byte (1, 2, ...), paced by what comes back, then listens until the relay
    /// falls quiet (400 packets at most). Returns the bytes sent and the packets heard.
    pub fn talk_and_listen(&self, frames: u16) -> (HashSet<u8>, Vec<RtpPacket>) {
        let mut sent = HashSet::new();
        let mut got = Vec::new();
        for i in 0..frames {
            let payload = [(i % 200) as u8 + 1; 160];
            sent.insert(payload[0]);
            self.send_rtp(0, 1000 + i, 5000 + u32::from(i) * 160, 0xabcdef, &payload);
            // one packet out of the relay per 20 ms frame
            if let Some(p) = self.recv_rtp(Duration::from_millis(100)) {
                got.push(p);
            }
        }
        while let Some(p) = self.recv_rtp(Duration::from_millis(300)) {
            got.push(p);
            if got.len() > 400 {
                break;
            }
        }
        (sent, got)
    }

    /// The next RTP packet: (marker, pt, seq, ts, ssrc, payload).
    pub fn recv_rtp(&self, timeout: Duration) -> Option<RtpPacket> {
        self.rtp.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = self.rtp.recv_from(&mut buf).ok()?;
        if n < 12 {
            return None;
        }
        Some((
            buf[1] & 0x80 != 0,
            buf[1] & 0x7f,
            u16::from_be_bytes([buf[2], buf[3]]),
            u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            buf[12..n].to_vec(),
        ))
    }
}

/// The media address of an SDP body.
pub fn sdp_addr(body: &str) -> Option<SocketAddr> {
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim();
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split(' ')
        .next()?;
    format!("{ip}:{port}").parse().ok()
}
