#!/usr/bin/env python3
"""A caller who pauses: SIPp's G.711 A-law speech pcap followed by as long of the A-law idle
code, the packets of a line that carries nothing, for bench/bridge-load.sh (CALLER_PAUSES=1).

Usage: bench/caller_pauses.py IN.pcap OUT.pcap

Each idle packet copies the last speech packet's headers with the next RTP sequence number and
timestamp, 240 bytes of 0xD5 (A-law's idle code, ±8 when decoded), 30 ms after the one before,
as in the speech part.
"""
import struct
import sys

IDLE = 0xD5


def main(src, dst):
    data = open(src, "rb").read()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        sys.exit(f"{src}: not a little-endian pcap")
    head, at, records = data[:24], 24, []
    while at + 16 <= len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[at:at + 16])
        records.append((sec, usec, data[at + 16:at + 16 + incl]))
        at += 16 + incl
    if len(records) < 2:
        sys.exit(f"{src}: too few packets")
    t0 = records[0][0] * 1_000_000 + records[0][1]
    t_last = records[-1][0] * 1_000_000 + records[-1][1]
    step = (t_last - t0) // (len(records) - 1)
    last = records[-1][2]
    ihl = (last[14] & 0x0F) * 4
    rtp_at = 14 + ihl + 8
    cc = last[rtp_at] & 0x0F
    payload_at = rtp_at + 12 + 4 * cc
    samples = len(last) - payload_at
    seq, ts = struct.unpack(">HI", last[rtp_at + 2:rtp_at + 8])
    out = [head]
    for sec, usec, pkt in records:
        out.append(struct.pack("<IIII", sec, usec, len(pkt), len(pkt)) + pkt)
    for i in range(1, len(records)):
        t = t_last + i * step
        pkt = bytearray(last)
        struct.pack_into(">HI", pkt, rtp_at + 2, (seq + i) & 0xFFFF, (ts + i * samples) & 0xFFFFFFFF)
        pkt[rtp_at + 1] &= 0x7F  # no marker
        pkt[payload_at:] = bytes([IDLE]) * samples
        # the UDP checksum no longer holds: zero means none (IPv4)
        struct.pack_into(">H", pkt, 14 + ihl + 6, 0)
        out.append(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(pkt), len(pkt)) + bytes(pkt))
    open(dst, "wb").write(b"".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
