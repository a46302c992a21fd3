#!/usr/bin/env python3
"""What a running relay holds and sends, for bench/bridge-load.sh (Linux, loopback runs only).

  relay_census.py fds PID RTP_LO RTP_HI
      The process's open file descriptors by kind, as JSON: UDP sockets inside the RTP port
      range (the phone legs) and outside it (the WebRTC legs toward OpenAI, SIP), TCP sockets
      (listening, and connected, by peer port), Unix sockets, epoll/event/timer fds, files.

  relay_census.py traffic PID SECONDS RTP_LO RTP_HI SIP_PORT ADMIN_PORT [DB_PORT]
      Captures the loopback interface for SECONDS (needs CAP_NET_RAW: root) and counts the
      packets and IP bytes (IP header included, link header not) the relay sent and received,
      by leg: `phone` (its sockets in the RTP range: RTP and RTCP with the callers), `sip`,
      `admin`, `db` (connections to DB_PORT) and `openai` (every other socket: the WebRTC legs' UDP, the WebSocket and HTTP
      connections to the realtime service; a WebRTC leg's datagrams are also counted by what
      they carry: `rtp` audio, `rtcp`, `dtls` the data channel's events, `stun`; a WebSocket
      leg's TCP segments as `data` or `ack`). JSON on stdout, with the kernel's drop count
      (which must be 0 for the figures to hold). Also the timing of RTP as its receiver would
      measure it (`rtp_timing`: `phone_out` the relay's RTP to the callers, `openai_in` the
      agent's audio as the realtime service sent it, `openai_out` the caller's audio toward
      it): from the kernel's timestamp of each packet and its RTP timestamp, the RFC 3550
      interarrival jitter of each stream at the end of the capture, and the change in transit
      time between consecutive packets of a stream (|D| of RFC 3550 6.4.1), in ms.

A packet belongs to the relay when its source or destination address is one of the relay's
own sockets, read from /proc/PID/fd and /proc/PID/net/{udp,tcp}[6] when the capture starts
(calls are steady then, so the set does not change). Every wait is bounded by SECONDS.
"""
import json
import os
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def track(timing, key, stamp, ts, rate):
    """One RTP packet of stream `key` seen at `stamp` (ns) with timestamp `ts` (`rate` Hz):
    the stream's RFC 3550 jitter (A.8) and the change in transit since its last packet, in ms."""
    streams, changes = timing
    st = streams.get(key)
    if st is None:
        streams[key] = [stamp, ts, 0.0, rate]
        return
    d = (stamp - st[0]) * rate / 1e9 - ((ts - st[1]) & 0xFFFFFFFF)
    st[2] += (abs(d) - st[2]) / 16
    changes.append(abs(d) * 1000 / rate)
    st[0], st[1] = stamp, ts


def timing_summary(streams, changes):
    jitters = [st[2] * 1000 / st[3] for st in streams.values()]
    return {
        "streams": len(streams),
        "jitter_ms_mean": sum(jitters) / len(jitters) if jitters else None,
        "jitter_ms_max": max(jitters) if jitters else None,
        "transit_change_ms_p50": percentile(changes, 0.5),
        "transit_change_ms_p99": percentile(changes, 0.99),
        "transit_change_ms_max": max(changes) if changes else None,
    }


def socket_inodes(pid):
    """Maps each socket inode the process holds to its fd count, plus the other fds by kind."""
    inodes, other = {}, {}
    d = f"/proc/{pid}/fd"
    for name in os.listdir(d):
        try:
            target = os.readlink(f"{d}/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes[int(target[8:-1])] = inodes.get(int(target[8:-1]), 0) + 1
        elif target.startswith("anon_inode:"):
            kind = target[len("anon_inode:"):].strip("[]")
            other[kind] = other.get(kind, 0) + 1
        elif target.startswith("pipe:"):
            other["pipe"] = other.get("pipe", 0) + 1
        else:
            other["file"] = other.get("file", 0) + 1
    return inodes, other


def parse_addr(hexaddr):
    """`0100007F:4E20` (or the IPv6 form) -> ('127.0.0.1', 20000)."""
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        # four little-endian 32-bit words
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        elif ip == "::":
            ip = "0.0.0.0"
    return ip, int(port_hex, 16)


def sockets(pid):
    """The process's inet sockets: (proto, local, remote, tcp state) per inode, and the fds
    that are not inet sockets by kind."""
    inodes, other = socket_inodes(pid)
    found = {}
    for proto in ("udp", "udp6", "tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{proto}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            inode = int(f[9])
            if inode in inodes:
                found[inode] = (proto.rstrip("6"), parse_addr(f[1]), parse_addr(f[2]), f[3])
    unix = sum(n for i, n in inodes.items() if i not in found)
    if unix:
        other["unix (or other) socket"] = unix
    return found, other


def fds(pid, rtp_lo, rtp_hi):
    found, other = sockets(pid)
    out = {"udp_rtp_range": 0, "udp_other": 0, "tcp_listen": 0, "tcp_connected": {}}
    for proto, local, remote, state in found.values():
        if proto == "udp":
            key = "udp_rtp_range" if rtp_lo <= local[1] <= rtp_hi else "udp_other"
            out[key] += 1
        elif state == "0A":
            out["tcp_listen"] += 1
        else:
            peer = str(remote[1])
            out["tcp_connected"][peer] = out["tcp_connected"].get(peer, 0) + 1
    out["other"] = other
    out["total"] = len(os.listdir(f"/proc/{pid}/fd"))
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            out["limit_soft"], out["limit_hard"] = line.split()[3:5]
    return out


def traffic(pid, seconds, rtp_lo, rtp_hi, sip_port, admin_port, db_port=0):
    found, _ = sockets(pid)
    # (proto number, ip, port) -> leg; a wildcard-bound socket matches any address.
    mine = {}
    for proto, local, remote, _state in found.values():
        p = 17 if proto == "udp" else 6
        port = local[1]
        if rtp_lo <= port <= rtp_hi and p == 17:
            leg = "phone"
        elif p == 6 and db_port and remote[1] == db_port:
            leg = "db"
        elif port == sip_port:
            leg = "sip"
        elif port == admin_port:
            leg = "admin"
        else:
            leg = "openai"
        mine[(p, local[0], port)] = leg
    wild = {(p, port): leg for (p, ip, port), leg in mine.items() if ip in ("0.0.0.0", "::")}

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.bind(("lo", 0))
    s.settimeout(0.2)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    counts = {}  # (leg, "in"/"out") -> [packets, bytes]
    # the RTP streams by leg and direction, each by (source port, destination ip and port)
    timing = {k: ({}, []) for k in ("phone_out", "openai_in", "openai_out")}
    buf = bytearray(65600)
    view = memoryview(buf)
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        try:
            n, anc, _flags, addr = s.recvmsg_into([buf], 64)
        except socket.timeout:
            continue
        stamp = None
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack_from("qq", data)
                stamp = sec * 1_000_000_000 + nsec
        # lo shows each packet twice (sent and received): count the sent copy only.
        if addr[2] != PACKET_OUTGOING or n < 14 + 20 or buf[12:14] != b"\x08\x00":
            continue
        ihl = (buf[14] & 0x0F) * 4
        proto = buf[23]
        if proto not in (6, 17) or n < 14 + ihl + 4:
            continue
        total = struct.unpack_from("!H", buf, 16)[0]
        src = socket.inet_ntoa(view[26:30])
        dst = socket.inet_ntoa(view[30:34])
        sport, dport = struct.unpack_from("!HH", buf, 14 + ihl)
        leg = mine.get((proto, src, sport)) or wild.get((proto, sport))
        direction = "out"
        if leg is None:
            leg = mine.get((proto, dst, dport)) or wild.get((proto, dport))
            direction = "in"
        if leg is None:
            continue
        key = f"{leg}_{direction}"
        c = counts.setdefault(key, [0, 0])
        c[0] += 1
        c[1] += total
        if (proto == 17 and leg in ("phone", "openai") and stamp is not None
                and (leg, direction) != ("phone", "in")
                and n >= 14 + ihl + 8 + 12 and 128 <= buf[14 + ihl + 8] < 192
                and not 64 <= (buf[14 + ihl + 9] & 0x7F) < 96):
            # RTP to a caller, or either way on a WebRTC leg (SRTP: the header is clear;
            # RTCP's packet types 192-223 read as payload types 64-95 with the marker bit)
            ts = struct.unpack_from("!I", buf, 14 + ihl + 8 + 4)[0]
            # the phone leg's G.711 counts 8 kHz, Opus 48 kHz
            rate = 8000 if leg == "phone" else 48000
            track(timing[f"{leg}_{direction}"], (sport, dst, dport), stamp, ts, rate)
        if proto == 17 and leg == "openai" and n > 14 + ihl + 9:
            # What a WebRTC leg's datagram carries (RFC 7983 demultiplexing by first byte;
            # RFC 5761 for RTCP): audio, its RTCP, the data channel (inside DTLS) or ICE.
            b0, b1 = buf[14 + ihl + 8], buf[14 + ihl + 9]
            if b0 < 4:
                kind = "stun"
            elif 20 <= b0 < 64:
                kind = "dtls"
            elif 128 <= b0 < 192:
                kind = "rtcp" if 64 <= (b1 & 0x7F) < 96 else "rtp"
            else:
                kind = "other"
            c = counts.setdefault(f"{key}/{kind}", [0, 0])
            c[0] += 1
            c[1] += total
        elif proto == 6 and leg == "openai" and n >= 14 + ihl + 13:
            # A WebSocket leg's segments: with data (events, audio) or bare ACKs.
            thl = (buf[14 + ihl + 12] >> 4) * 4
            kind = "data" if total > ihl + thl else "ack"
            c = counts.setdefault(f"{key}/{kind}", [0, 0])
            c[0] += 1
            c[1] += total
    elapsed = time.monotonic() - start
    stats = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    _packets, drops = struct.unpack("II", stats)
    s.close()
    summary = {k: timing_summary(*v) for k, v in timing.items()}
    return {
        "seconds": elapsed,
        "drops": drops,
        "rtp_timing": summary,
        "legs": {k: {"packets": v[0], "bytes": v[1]} for k, v in sorted(counts.items())},
    }


def main(argv):
    if len(argv) >= 5 and argv[1] == "fds":
        print(json.dumps(fds(int(argv[2]), int(argv[3]), int(argv[4]))))
    elif len(argv) >= 8 and argv[1] == "traffic":
        pid, secs, lo, hi, sip, admin = argv[2:8]
        db = int(argv[8]) if len(argv) > 8 else 0
        print(json.dumps(traffic(int(pid), float(secs), int(lo), int(hi), int(sip), int(admin), db)))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
