#!/usr/bin/env python3
"""The callers' audio for bench/bridge-load.sh: SIPp's G.711 A-law speech pcap, in packets of
another length (CALLER_PTIME), followed by as long of the A-law idle code (CALLER_PAUSES=1).

Usage: bench/caller_pcap.py IN.pcap OUT.pcap [--ptime MS] [--pauses]

- `--ptime MS`: the speech cut again into packets of MS milliseconds, one every MS on a steady
  clock, with their RTP sequence numbers and timestamps counted on from the first packet's
  (most trunks send 20 ms; SIPp's pcap has 30 ms packets). Without it, IN's packets as they
  are, with their own timing.
- `--pauses`: a caller who pauses: after the speech, as long of A-law's idle code (0xD5, ±8
  when decoded), the packets of a line that carries nothing, in the same packet length.

A packet written anew copies the Ethernet, IPv4 and UDP headers of IN's first packet (an idle
packet: of the packet before the pause), with their lengths and the IPv4 checksum set for its
size and no UDP checksum (zero: none, in IPv4). Prints the length of one play of OUT in
milliseconds (its first packet to the end of its last), for the scenario's pause between plays.
"""
import argparse
import struct
import sys

IDLE = 0xD5
RATE = 8000  # G.711 samples a second


def read_pcap(path):
    data = open(path, "rb").read()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        sys.exit(f"{path}: not a little-endian pcap")
    head, at, records = data[:24], 24, []
    while at + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[at:at + 16])
        records.append((sec * 1_000_000 + usec, data[at + 16:at + 16 + incl]))
        at += 16 + incl
    if len(records) < 2:
        sys.exit(f"{path}: too few packets")
    return head, records


def offsets(pkt):
    """Where the RTP header and its payload start in a captured Ethernet frame."""
    ihl = (pkt[14] & 0x0F) * 4
    rtp_at = 14 + ihl + 8
    return ihl, rtp_at, rtp_at + 12 + 4 * (pkt[rtp_at] & 0x0F)


def packet(template, seq, ts, payload, marker):
    """`template`'s headers around `payload`, with its lengths, sequence number and timestamp."""
    ihl, rtp_at, payload_at = offsets(template)
    pkt = bytearray(template[:payload_at]) + payload
    struct.pack_into(">H", pkt, 14 + 2, len(pkt) - 14)  # IPv4 total length
    struct.pack_into(">H", pkt, 14 + 10, 0)
    words = struct.unpack(f">{ihl // 2}H", bytes(pkt[14:14 + ihl]))
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into(">H", pkt, 14 + 10, ~total & 0xFFFF)  # IPv4 header checksum
    struct.pack_into(">HH", pkt, 14 + ihl + 4, len(pkt) - 14 - ihl, 0)  # UDP length, no checksum
    struct.pack_into(">HI", pkt, rtp_at + 2, seq & 0xFFFF, ts & 0xFFFFFFFF)
    pkt[rtp_at + 1] = (pkt[rtp_at + 1] & 0x7F) | (0x80 if marker else 0)
    return bytes(pkt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--ptime", type=int, help="milliseconds of audio in a packet")
    ap.add_argument("--pauses", action="store_true", help="as long of the idle code after the speech")
    args = ap.parse_args()
    if args.ptime is not None and not 0 < args.ptime <= 120:
        sys.exit(f"--ptime {args.ptime}: not a packet length in milliseconds (1 to 120)")
    head, records = read_pcap(args.src)
    first = records[0][1]
    _, rtp_at, payload_at = offsets(first)
    seq0, ts0 = struct.unpack(">HI", first[rtp_at + 2:rtp_at + 8])
    t0 = records[0][0]
    if args.ptime:
        speech = b"".join(pkt[offsets(pkt)[2]:] for _, pkt in records)
        samples = RATE * args.ptime // 1000
        step = args.ptime * 1000
        out = [(t0 + i * step, packet(first, seq0 + i, ts0 + i * samples, speech[at:at + samples], i == 0))
               for i, at in enumerate(range(0, len(speech) - samples + 1, samples))]
    else:
        samples = len(first) - payload_at
        step = (records[-1][0] - t0) // (len(records) - 1)
        out = list(records)
    if args.pauses:
        n, (t_last, last) = len(out), out[-1]
        _, last_rtp, _ = offsets(last)
        seq, ts = struct.unpack(">HI", last[last_rtp + 2:last_rtp + 8])
        idle = bytes([IDLE]) * samples
        out += [(t_last + i * step, packet(last, seq + i, ts + i * samples, idle, False))
                for i in range(1, n)]
    with open(args.dst, "wb") as f:
        f.write(head)
        for t, pkt in out:
            f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(pkt), len(pkt)) + pkt)
    print((out[-1][0] - t0 + step + 500) // 1000)


if __name__ == "__main__":
    main()
