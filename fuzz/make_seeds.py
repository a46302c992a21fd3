#!/usr/bin/env python3
"""Writes the seed corpus fuzz/seeds/<target>/ from the project's own test messages:
the SIPp scenarios' requests, the SDP offers of the SIP tests, RTP/RTCP/SRTP packets and
RFC 4733 events like the media tests send, Realtime events as the simulator speaks them,
and booking tool calls. Run from the repository root; the output is committed."""
import base64, json, pathlib, re, struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def chunked(items):
    out = bytearray()
    for it in items:
        it = it[:255]
        out.append(len(it))
        out += it
    return bytes(out)


# ---- SIP: every request of the SIPp scenarios, as SIPp sends it -----------------------
VALUES = {
    "service": "100", "remote_ip": "127.0.0.1", "remote_port": "5060",
    "transport": "UDP", "local_ip": "127.0.0.1", "local_port": "5070",
    "branch": "z9hG4bK-1234-1-0", "branch-3": "z9hG4bK-1234-1-3", "pid": "1234",
    "call_number": "1", "call_id": "1-1234@127.0.0.1", "local_ip_type": "4",
    "media_ip_type": "4", "media_ip": "127.0.0.1", "media_port": "6000",
    "peer_tag_param": ";tag=as5f3a2c1b", "cseq": "1", "last_Call-ID:": "Call-ID: 1-1234@127.0.0.1",
    "authentication": 'Authorization: Digest username="trunk", realm="voxrelay", '
    'nonce="@NONCE@", uri="sip:100@127.0.0.1:5060", '
    'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, '
    'nc=00000001, cnonce="0a4f113b"',
}


def render(block):
    lines = block.strip("\n").split("\n")
    indent = min(len(l) - len(l.lstrip()) for l in lines if l.strip())
    lines = [l[indent:].rstrip() for l in lines]
    text = "\n".join(lines).strip("\n")
    text = re.sub(r"\[([a-zA-Z_\-0-9:]+)\]", lambda m: VALUES.get(m.group(1), m.group(0)), text)
    head, _, body = text.partition("\n\n")
    body = body.replace("\n", "\r\n") + ("\r\n" if body else "")
    head = head.replace("\n", "\r\n").replace("[len]", str(len(body.encode())))
    return head + "\r\n\r\n" + body


sdps = []
for xml in sorted((ROOT / "tests" / "sipp").glob("*.xml")):
    text = xml.read_text(encoding="latin-1")
    for i, send in enumerate(re.findall(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", text, re.S)):
        msg = render(send)
        if not re.match(r"^[A-Z]+ ", msg):
            continue
        put("sip_message", f"{xml.stem}_{i}", msg)
        body = msg.partition("\r\n\r\n")[2]
        if body.startswith("v=0"):
            sdps.append((f"{xml.stem}_{i}", body))

# over TCP: two messages back to back in one read, and a keepalive
put("sip_message", "tcp_two_messages",
    render("""OPTIONS sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-o1
From: <sip:probe@127.0.0.1>;tag=a1
To: <sip:127.0.0.1>
Call-ID: opt-1
CSeq: 1 OPTIONS
Content-Length: 0
""") + "\r\n\r\n" + render("""BYE sip:100@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-b1
From: <sip:caller@127.0.0.1>;tag=a2
To: <sip:100@127.0.0.1>;tag=b2
Call-ID: bye-1
CSeq: 2 BYE
Content-Length: 0
"""))
put("sip_message", "notify_sipfrag", render("""NOTIFY sip:voxrelay@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-n1
From: <sip:100@127.0.0.1>;tag=x1
To: <sip:caller@127.0.0.1>;tag=y1
Call-ID: refer-1
CSeq: 3 NOTIFY
Event: refer
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag
Content-Length: [len]

SIP/2.0 200 OK
"""))
put("sip_message", "response_200", render("""SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-r1;received=127.0.0.1;rport=5060
From: <sip:voxrelay@127.0.0.1>;tag=r1
To: <sip:trunk@127.0.0.1>;tag=r2
Call-ID: reg-1
CSeq: 1 REGISTER
Contact: <sip:voxrelay@127.0.0.1:5060>;expires=300
Content-Length: 0
"""))
put("sip_message", "tel_uri_ipv6", render("""INVITE tel:+4930123456;phone-context=example.com SIP/2.0
Via: SIP/2.0/UDP [::1]:5070;branch=z9hG4bK-v6;rport
From: "Caller" <sip:+4930999@[::1]:5070>;tag=v6
To: <tel:+4930123456>
Call-ID: v6-1
CSeq: 1 INVITE
Contact: <sip:caller@[::1]:5070>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP6 ::1
s=-
c=IN IP6 ::1
t=0 0
m=audio 6000 RTP/AVP 8 0 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
"""))

# ---- SDP: the offers above, and the SRTP/hold/multi-stream offers of the SDP tests -----
for name, body in sdps:
    put("sdp_offer", name, body)
SAVP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 6000 RTP/SAVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n"
        "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\r\n"
        "a=sendrecv\r\n")
put("sdp_offer", "srtp_two_crypto_lines", SAVP)
put("sdp_offer", "video_then_audio_hold",
    "v=0\no=- 2 2 IN IP4 10.0.0.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\n"
    "m=video 7000 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    "m=audio 6000 RTP/AVP 111 0\na=rtpmap:111 opus/48000/2\na=fmtp:111 useinbandfec=1\n"
    "a=rtcp:6001 IN IP4 10.0.0.1\na=inactive\nm=audio 0 RTP/AVP 0\n")
put("sdp_offer", "opus_only", "v=0\r\no=- 3 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\na=ptime:20\r\n")

# ---- RTP: PCMU/PCMA/Opus streams, CSRCs, an extension, padding, a telephone event ------
def rtp(pt, seq, ts, ssrc, payload, marker=False, csrc=(), ext=None, pad=0):
    b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext is not None else 0) | len(csrc)
    out = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    for c in csrc:
        out += struct.pack("!I", c)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if pad:
        out += b"\0" * (pad - 1) + bytes([pad])
    return out

pcmu = [rtp(0, 100 + i, 160 * i, 0x11223344, bytes([0xFF - (i * 7 + j) % 64 for j in range(160)]), marker=i == 0) for i in range(8)]
put("rtp_packet", "pcmu_stream", b"\x00" + chunked([p[:255] for p in pcmu]))
put("rtp_packet", "pcma_reordered", b"\x01" + chunked([rtp(8, s, 160 * s, 7, b"\xd5" * 160) for s in (1, 3, 2, 4, 4, 7, 5)]))
put("rtp_packet", "opus_frames", b"\x02" + chunked([rtp(111, s, 160 * s, 9, bytes([0x08]) + b"\x5a" * 30) for s in range(6)]))
put("rtp_packet", "csrc_ext_padding", b"\x00" + chunked([rtp(0, 1, 0, 5, b"\x7f" * 160, csrc=(1, 2), ext=b"\x10\xaa\x00\x00", pad=4)]))
put("rtp_packet", "ssrc_change", b"\x00" + chunked([rtp(0, 10, 1600, 1, b"\xff" * 160), rtp(0, 60000, 99, 2, b"\xff" * 160), rtp(0, 60001, 259, 2, b"\xff" * 160)]))

# ---- RTCP: a sender report with a reception block, RR + SDES + BYE -----------------------
def rr_block(ssrc):
    return struct.pack("!IIIIII", ssrc, (5 << 24) | 12, 1234, 40, 0, 0)
sr = struct.pack("!BBHIIIIII", 0x81, 200, 12, 0xAABBCCDD, 0xE000_0000, 0, 160, 10, 1600) + rr_block(0x12345678)
rr = struct.pack("!BBHI", 0x81, 201, 7, 0xAABBCCDD) + rr_block(0x12345678)
cname = b"\x01\x09caller@x1\x00\x00"
sdes = struct.pack("!BBHI", 0x81, 202, (4 + len(cname)) // 4, 0xAABBCCDD) + cname
bye = struct.pack("!BBHI", 0x81, 203, 1, 0xAABBCCDD)
put("rtcp_packet", "sender_report", sr)
put("rtcp_packet", "rr_sdes_bye", rr + sdes + bye)

# ---- SRTP: items of (how, packet): odd `how` are sealed by the caller's context first ------
p = [rtp(0, 500 + i, 160 * i, 0x55667788, b"\xff" * 160) for i in range(4)]
put("srtp_unprotect", "rtp_roundtrip_80", b"\x00" + chunked([b"\x01" + x for x in p] + [b"\x01" + p[1]]))
put("srtp_unprotect", "rtp_roundtrip_32", b"\x01" + chunked([b"\x01" + x for x in p]))
put("srtp_unprotect", "rtcp_roundtrip", b"\x00" + chunked([b"\x03" + sr, b"\x03" + rr + sdes]))
put("srtp_unprotect", "forged", b"\x00" + chunked([b"\x00" + p[0] + b"\x01" * 10, b"\x02" + sr + b"\x80\x00\x00\x01" + b"\x02" * 10]))

# ---- RFC 4733: items of (time step, timestamp step, payload) -----------------------------
def ev(code, end, vol, dur):
    return struct.pack("!BBH", code, (0x80 if end else 0) | vol, dur)
key5 = [b"\x00\x01" + ev(5, False, 10, 160)] + [b"\x02\x00" + ev(5, False, 10, 160 * k) for k in range(2, 6)] + [b"\x02\x00" + ev(5, True, 10, 960)] * 3
put("dtmf_event", "key_5", chunked(key5))
put("dtmf_event", "lost_end_then_hash", chunked([b"\x00\x01" + ev(1, False, 10, 160), b"\x02\x00" + ev(1, False, 10, 320), b"\x05\x05" + ev(11, True, 10, 400), b"\xff\x00" + ev(16, True, 3, 800)]))
put("dtmf_event", "digits_group", chunked([bytes([2, 6]) + ev(k, True, 10, 800) for k in (1, 2, 3, 10, 11)]))

# ---- Realtime server events, as the simulator sends them ----------------------------------
session = {"type": "realtime", "object": "realtime.session", "id": "sess_X", "model": "gpt-realtime",
           "output_modalities": ["audio"], "instructions": "You are a helpful assistant.", "tools": [],
           "tool_choice": "auto", "max_output_tokens": "inf",
           "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad", "threshold": 0.5,
                     "prefix_padding_ms": 300, "silence_duration_ms": 500, "create_response": True, "interrupt_response": True}},
                     "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0}}}
resp = {"object": "realtime.response", "id": "resp_1", "status": "in_progress", "output": [], "conversation_id": "conv_1",
        "output_modalities": ["audio"], "max_output_tokens": "inf", "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}}
fc_item = {"id": "item_2", "type": "function_call", "status": "completed", "name": "find_bookings",
           "call_id": "call_1", "arguments": "{\"phone\":\"+14155550100\"}"}
events = [
    {"type": "session.created", "event_id": "event_1", "session": session},
    {"type": "session.updated", "event_id": "event_2", "session": session},
    {"type": "input_audio_buffer.speech_started", "event_id": "event_3", "audio_start_ms": 120, "item_id": "item_1"},
    {"type": "input_audio_buffer.speech_stopped", "event_id": "event_4", "audio_end_ms": 900, "item_id": "item_1"},
    {"type": "input_audio_buffer.committed", "event_id": "event_5", "previous_item_id": None, "item_id": "item_1"},
    {"type": "response.created", "event_id": "event_6", "response": resp},
    {"type": "response.output_item.added", "event_id": "event_7", "response_id": "resp_1", "output_index": 0,
     "item": {"id": "item_2", "type": "function_call", "status": "in_progress", "name": "find_bookings", "call_id": "call_1", "arguments": ""}},
    {"type": "response.function_call_arguments.delta", "event_id": "event_8", "response_id": "resp_1", "item_id": "item_2",
     "output_index": 0, "call_id": "call_1", "delta": "{\"phone\":"},
    {"type": "response.function_call_arguments.done", "event_id": "event_9", "response_id": "resp_1", "item_id": "item_2",
     "output_index": 0, "call_id": "call_1", "name": "find_bookings", "arguments": "{\"phone\":\"+14155550100\"}"},
    {"type": "response.output_item.done", "event_id": "event_10", "response_id": "resp_1", "output_index": 0, "item": fc_item},
    {"type": "response.done", "event_id": "event_11", "response": dict(resp, status="completed", output=[fc_item])},
    {"type": "response.output_audio.delta", "event_id": "event_12", "response_id": "resp_2", "item_id": "item_3",
     "output_index": 0, "content_index": 0, "delta": base64.b64encode(b"\xff" * 480).decode()},
    {"type": "response.output_audio_transcript.delta", "event_id": "event_13", "response_id": "resp_2", "item_id": "item_3",
     "output_index": 0, "content_index": 0, "delta": "Hello"},
    {"type": "response.output_audio.done", "event_id": "event_14", "response_id": "resp_2", "item_id": "item_3", "output_index": 0, "content_index": 0},
    {"type": "conversation.item.input_audio_transcription.completed", "event_id": "event_15", "item_id": "item_1",
     "content_index": 0, "transcript": "I'd like an appointment."},
    {"type": "output_audio_buffer.started", "event_id": "event_16", "response_id": "resp_2"},
    {"type": "output_audio_buffer.cleared", "event_id": "event_17", "response_id": "resp_2"},
    {"type": "rate_limits.updated", "event_id": "event_18", "rate_limits": [{"name": "tokens", "limit": 1000, "remaining": 900, "reset_seconds": 1.5}]},
    {"type": "error", "event_id": "event_19", "error": {"type": "invalid_request_error", "code": "session_expired",
     "message": "Your session hit the maximum duration of 60 minutes.", "param": None, "event_id": None}},
]
put("realtime_event", "tool_call_turn", "\n".join(json.dumps(e) for e in events[:11]) + "\n")
put("realtime_event", "audio_turn", "\n".join(json.dumps(e) for e in events[11:]) + "\n")

# ---- Client events into the simulator --------------------------------------------------
frame = base64.b64encode(b"\x00\x01" * 480).decode()
client = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "Book appointments.",
     "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}},
               "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
     "tools": [{"type": "function", "name": "find_bookings", "description": "d", "parameters": {"type": "object", "properties": {"phone": {"type": "string"}}}}]}},
    {"type": "input_audio_buffer.append", "audio": frame},
    {"type": "input_audio_buffer.commit", "event_id": "c1"},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}},
    {"type": "response.create", "response": {"instructions": "Greet the caller."}},
    {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1", "output": "{\"bookings\":[]}"}},
    {"type": "response.cancel"},
    {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 100},
    {"type": "conversation.item.retrieve", "item_id": "item_1"},
    {"type": "conversation.item.delete", "item_id": "item_1"},
    {"type": "output_audio_buffer.clear"},
    {"type": "input_audio_buffer.clear"},
]
put("sim_client_event", "a_turn", "\n".join(json.dumps(e) for e in client[:5]) + "\n")
put("sim_client_event", "tools_and_edits", "\n".join(json.dumps(e) for e in client[5:]) + "\n")
put("sim_client_event", "webrtc_session", " " + json.dumps(client[0]) + "\n" + json.dumps(client[4]) + "\n")

# ---- Booking tool calls: the tool's index, then the model's arguments ----------------------
put("tool_arguments", "check_availability", b"\x00" + b'{"start_date":"2026-03-02","end_date":"2026-03-06"}')
put("tool_arguments", "create_booking", b"\x01" + b'{"patient_name":"Ada Lovelace","phone":"+1 415 555 0100","date":"2026-03-03","time":"9:30"}')
put("tool_arguments", "cancel_booking", b"\x02" + b'{"booking_id":"KTH 472"}')
put("tool_arguments", "find_bookings", b"\x03" + b'{"phone":4155550100}')
put("tool_arguments", "unknown_tool", b"\x04" + b'{}')
