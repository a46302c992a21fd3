"""Scores bench/opus-quality.sh's degraded WAVs with PESQ and writes the tables.

PESQ: ITU-T P.862 in narrowband mode at 8 kHz (the `pesq` package, ludlows/python-pesq),
reported as MOS-LQO by the P.862.1 mapping. Each degraded clip is compared with the clip's
band-limited 8 kHz reference (before G.711), so a score covers the whole chain.

The knee at a loss rate: among the settings whose mean MOS-LQO is within MARGIN of the best
at that rate, the one with the lowest measured encode time (then the lowest bitrate). One
setting serves whatever loss the call meets, so the joint knee weighs a setting by its
largest shortfall from the best at any loss rate: the cheapest within MARGIN of the smallest
such shortfall.
"""

import argparse
import json
import math
import os
import shutil
import wave
from multiprocessing import Pool

import numpy as np
from pesq import pesq

MARGIN = 0.05
DEFAULT = (5, 24000, True)  # OpusConfig::default(): complexity 5, 24 kbit/s, FEC on


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32)


def score(job):
    run, clip, ref_path, deg_path = job
    ref, deg = read_wav(ref_path), read_wav(deg_path)
    n = min(len(ref), len(deg))
    return run, clip, float(pesq(8000, ref[:n], deg[:n], "nb"))


def mean_se(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--keep", action="store_true", help="keep the degraded WAVs")
    ap.add_argument("--from-scores", action="store_true",
                    help="summarise an earlier run's scores.jsonl again (no scoring)")
    a = ap.parse_args()

    runs = [json.loads(l) for l in open(os.path.join(a.out, "runs.jsonl")) if l.strip()]
    corpus = os.path.join(a.out, "corpus")
    per_run = {}
    per_clip = {}
    scores_path = os.path.join(a.out, "scores.jsonl")
    if a.from_scores:
        for l in open(scores_path):
            s = json.loads(l)
            per_run.setdefault(s["run"], []).append(s["mos"])
            per_clip[(s["run"], s["clip"])] = s["mos"]
    else:
        jobs = []
        for i, r in enumerate(runs):
            for f in sorted(os.listdir(r["out"])):
                jobs.append((i, f[:-4], os.path.join(corpus, f), os.path.join(r["out"], f)))
        with Pool(a.jobs) as pool, open(scores_path, "w") as sf:
            for i, clip, mos in pool.imap_unordered(score, jobs, chunksize=8):
                per_run.setdefault(i, []).append(mos)
                per_clip[(i, clip)] = mos
                sf.write(json.dumps({"run": i, "clip": clip, "mos": mos}) + "\n")
    for i, r in enumerate(runs):
        r["mos"], r["mos_se"] = mean_se(per_run[i])
        r["clips"] = len(per_run[i])
        if not a.keep:
            shutil.rmtree(r["out"], ignore_errors=True)
    if not a.keep:
        shutil.rmtree(os.path.join(a.out, "runs"), ignore_errors=True)

    base = next(r for r in runs if r["dir"] == "g711")
    grid = [r for r in runs if r["dir"] == "caller_to_agent"]
    agent = [r for r in runs if r["dir"] == "agent_to_caller"]
    losses = sorted({r["loss_pct"] for r in grid})
    cx = sorted({r["complexity"] for r in grid})
    br = sorted({r["bitrate"] for r in grid})
    key = lambda r: (r["complexity"], r["bitrate"], r["fec"])
    by = {(key(r), r["loss_pct"]): r for r in grid}
    # encode time per setting: the same packets serve every loss rate
    enc = {key(r): r["encode_us_per_frame"] for r in grid}
    settings = sorted(enc)

    def cost(k):
        return (enc[k], k[1])

    best = {l: max(by[(k, l)]["mos"] for k in settings) for l in losses}
    knees = {}
    for l in losses:
        near = [k for k in settings if by[(k, l)]["mos"] >= best[l] - MARGIN]
        knees[l] = min(near, key=cost)
    # one setting for every loss rate: its shortfall is its largest gap to the best at any
    # rate; the joint knee is the cheapest within MARGIN of the smallest shortfall
    short = {k: max(best[l] - by[(k, l)]["mos"] for l in losses) for k in settings}
    least = min(short.values())
    joint = min((k for k in settings if short[k] <= least + MARGIN), key=cost)
    fec_least = min((short[k] for k in settings if k[2]), default=None)
    fec_joint = None if fec_least is None else min(
        (k for k in settings if k[2] and short[k] <= fec_least + MARGIN), key=cost)

    name = lambda k: f"complexity {k[0]}, {k[1] // 1000} kbit/s, FEC {'on' if k[2] else 'off'}"
    md = []
    md.append(f"Corpus: {base['clips']} clips. PESQ P.862 narrowband, MOS-LQO (P.862.1), mean over the corpus.\n")
    md.append(f"G.711 µ-law alone (the ceiling of the caller → agent direction): **{base['mos']:.3f}**\n")
    for fec in (False, True):
        for l in losses:
            md.append(f"\nCaller → agent, FEC {'on' if fec else 'off'}, {l} % loss: MOS-LQO by complexity (rows) and kbit/s (columns)\n")
            md.append("| cx | " + " | ".join(str(b // 1000) for b in br) + " |")
            md.append("|---" * (len(br) + 1) + "|")
            for c in cx:
                md.append(f"| {c} | " + " | ".join(f"{by[((c, b, fec), l)]['mos']:.3f}" for b in br) + " |")
    for fec in (False, True):
        md.append(f"\nEncode µs per 20 ms frame, FEC {'on' if fec else 'off'} (rows complexity, columns kbit/s)\n")
        md.append("| cx | " + " | ".join(str(b // 1000) for b in br) + " |")
        md.append("|---" * (len(br) + 1) + "|")
        for c in cx:
            md.append(f"| {c} | " + " | ".join(f"{enc[(c, b, fec)]:.0f}" for b in br) + " |")
    md.append("\nBest and knee (cheapest by measured encode time within %.2f MOS of the best):\n" % MARGIN)
    md.append("| loss | best MOS | best setting | knee | knee MOS | knee encode µs |")
    md.append("|---|---|---|---|---|---|")
    for l in losses:
        bk = max(settings, key=lambda k: by[(k, l)]["mos"])
        k = knees[l]
        md.append(f"| {l} % | {best[l]:.3f} | {name(bk)} | {name(k)} | {by[(k, l)]['mos']:.3f} | {enc[k]:.0f} |")
    md.append(f"\nSmallest shortfall from the best over the loss rates: {least:.3f}")
    for label, k in (("joint knee (every loss rate)", joint), ("joint knee with FEC on", fec_joint), ("current default", DEFAULT)):
        if k is None or k not in enc:
            md.append(f"\n{label}: none")
            continue
        scores = ", ".join(f"{by[(k, l)]['mos']:.3f} at {l} %" for l in losses) + f" (shortfall {short[k]:.3f})"
        md.append(f"\n{label}: {name(k)}: {scores}; encode {enc[k]:.0f} µs/frame, "
                  f"{by[(k, losses[0])]['bytes_per_frame']:.1f} bytes/frame, "
                  f"FEC in {by[(k, losses[0])]['fec_packets_pct']:.0f} % of packets")
    # the same clips and loss patterns under every setting: compare settings clip by clip
    idx = {id(r): i for i, r in enumerate(runs)}
    if DEFAULT in enc:
        md.append("\nAgainst the current default, clip by clip (mean difference ± its standard error):\n")
        md.append("| setting | " + " | ".join(f"{l} % loss" for l in losses) + " | encode µs |")
        md.append("|---" * (len(losses) + 2) + "|")
        # also: the cheapest setting no worse than the default at any loss rate, the cheapest
        # better by MARGIN at every rate, and the default's complexity at the highest bitrate
        no_worse = [k for k in settings
                    if all(by[(k, l)]["mos"] >= by[(DEFAULT, l)]["mos"] for l in losses)]
        cheap_no_worse = min(no_worse, key=cost) if no_worse else None
        better = [k for k in settings
                  if all(by[(k, l)]["mos"] >= by[(DEFAULT, l)]["mos"] + MARGIN for l in losses)]
        cheap_better = min(better, key=cost) if better else None
        same_cx = (DEFAULT[0], max(br), DEFAULT[2])
        shown = []
        for k in [knees[l] for l in losses] + [joint, fec_joint, cheap_no_worse, cheap_better, same_cx]:
            if k is not None and k in enc and k not in shown and k != DEFAULT:
                shown.append(k)
        for k in shown:
            cells = []
            for l in losses:
                a_run, d_run = idx[id(by[(k, l)])], idx[id(by[(DEFAULT, l)])]
                diffs = [per_clip[(a_run, c)] - per_clip[(d_run, c)]
                         for (r_, c) in per_clip if r_ == a_run]
                m, se = mean_se(diffs)
                cells.append(f"{m:+.3f} ± {se:.3f}")
            md.append(f"| {name(k)} | " + " | ".join(cells) + f" | {enc[k]:.0f} (default {enc[DEFAULT]:.0f}) |")
    if agent:
        md.append(f"\nAgent → caller (agent's 48 kHz Opus, {agent[0]['bitrate'] // 1000} kbit/s, FEC on → relay decode at 8 kHz → µ-law)\n")
        md.append("| sender | loss | MOS-LQO | relay decode µs/frame | bytes/frame | lost | FEC-recovered |")
        md.append("|---|---|---|---|---|---|---|")
        for r in agent:
            s = "narrow band (maxplaybackrate=8000)" if r["narrowband_sender"] else "full band"
            md.append(f"| {s} | {r['loss_pct']} % | {r['mos']:.3f} | {r['decode_us_per_frame']:.1f} | "
                      f"{r['bytes_per_frame']:.1f} | {r['lost']} | {r['recovered_by_fec']} |")
    open(os.path.join(a.out, "summary.md"), "w").write("\n".join(md) + "\n")
    json.dump({"runs": runs, "best": best, "knees": {str(l): knees[l] for l in losses},
               "joint_knee": joint, "joint_knee_fec": fec_joint},
              open(os.path.join(a.out, "summary.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
