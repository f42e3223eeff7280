#!/usr/bin/env python3
"""Summarize bench/backup.sh results: medians, min-max, lifeboat/restic and lifeboat/borg
ratios per phase, and which of the issue's targets are met.

Reads WORK/{disk,tmpfs}/results/{raw,sizes}.tsv (written by ../shared/bench/bench.sh) and
WORK/snapshots/snapshots.tsv. Prints Markdown on stdout.

    python3 bench/summarize.py --work /work/bench-work
"""
import argparse
import csv
import os
import statistics

LB, RESTIC, BORG = "lifeboat", "restic", "borg"
PHASES = ["init", "backup_initial", "backup_incr", "restore", "check_meta", "check_full"]
# phase -> (max lifeboat/restic, max lifeboat/borg) from the issue
TARGETS = {
    "backup_initial": (1 / 3, 1 / 2),
    "backup_incr": (1 / 3, 1 / 3),
    "restore": (1 / 2, 1 / 2),
    "check_full": (1 / 2, 1 / 2),
}
RSS_TARGET_MIB = 100
SNAP_TARGET_S = 0.1


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def med(xs):
    xs = [float(x) for x in xs if x not in ("", None)]
    return statistics.median(xs) if xs else None


def fmt(x, nd=2):
    return "—" if x is None else ("%.*f" % (nd, x))


def frac(t):
    return {1 / 3: "1/3", 1 / 2: "1/2"}.get(t, "%.2f" % t)


def phase_stats(rows, tool, phase):
    rs = [r for r in rows if r["tool"] == tool and r["phase"] == phase]
    if not rs:
        return None
    w = [float(r["wall_s"]) for r in rs]
    return {
        "n": len(rs),
        "med": statistics.median(w),
        "min": min(w),
        "max": max(w),
        "user": med([r["user_s"] for r in rs]),
        "sys": med([r["sys_s"] for r in rs]),
        "cpu": med([r["cpu_pct"] for r in rs]),
        "rss_med": med([r["maxrss_kb"] for r in rs]) / 1024,
        "rss_max": max(float(r["maxrss_kb"]) for r in rs) / 1024,
        "other_max": max(float(r.get("other_cpu_s") or 0) for r in rs),
        "other_med": med([r.get("other_cpu_s") or 0 for r in rs]),
    }


def variant_table(name, res, verdicts, base_res=None):
    rows = read_tsv(os.path.join(res, "raw.tsv"))
    if not rows:
        return []
    sizes = read_tsv(os.path.join(res, "sizes.tsv"))
    if base_res:  # restic/borg rows from another run (lifeboat-only follow-up runs)
        rows = [r for r in rows if r["tool"] == LB] + [
            r for r in read_tsv(os.path.join(base_res, "raw.tsv")) if r["tool"] != LB]
        sizes = [r for r in sizes if r["tool"] == LB] + [
            r for r in read_tsv(os.path.join(base_res, "sizes.tsv")) if r["tool"] != LB]
    out = ["### %s (%s)" % (name, res), ""]
    out.append("| phase | restic s | borg s | lifeboat s | lifeboat/restic | lifeboat/borg | target | met? |")
    out.append("|---|---|---|---|---|---|---|---|")
    for ph in PHASES:
        st = {t: phase_stats(rows, t, ph) for t in (RESTIC, BORG, LB)}
        if not any(st.values()):
            continue
        cell = lambda s: "—" if s is None else "%.2f (%.2f–%.2f)" % (s["med"], s["min"], s["max"])
        lb = st[LB]
        rr = lb["med"] / st[RESTIC]["med"] if lb and st[RESTIC] else None
        rb = lb["med"] / st[BORG]["med"] if lb and st[BORG] else None
        tgt, met = "", ""
        if ph in TARGETS and lb:
            tr, tb = TARGETS[ph]
            tgt = "≤ %s restic, ≤ %s borg" % (frac(tr), frac(tb))
            ok = (rr is not None and rr <= tr) and (rb is not None and rb <= tb)
            met = "**met**" if ok else "missed"
            verdicts.append(("%s %s" % (ph, name), tgt, "%.2f / %.2f" % (rr or 0, rb or 0), ok))
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            ph, cell(st[RESTIC]), cell(st[BORG]), cell(lb), fmt(rr), fmt(rb), tgt, met))
    out.append("")
    out.append("CPU seconds (user+sys, medians) — less sensitive to foreign load than wall time, "
               "but blind to parallelism:")
    out.append("")
    out.append("| phase | restic CPU s | borg CPU s | lifeboat CPU s | lifeboat/restic | lifeboat/borg |")
    out.append("|---|---|---|---|---|---|")
    for ph in PHASES:
        c = {}
        for t in (RESTIC, BORG, LB):
            s_ = phase_stats(rows, t, ph)
            c[t] = None if s_ is None else med([float(r["user_s"]) + float(r["sys_s"]) for r in rows
                                                if r["tool"] == t and r["phase"] == ph])
        if c[LB] is None:
            continue
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            ph, fmt(c[RESTIC]), fmt(c[BORG]), fmt(c[LB]),
            fmt(c[LB] / c[RESTIC]) if c[RESTIC] else "—", fmt(c[LB] / c[BORG]) if c[BORG] else "—"))
    out.append("")
    out.append("Per tool and phase (medians; CPU % from GNU time; other_cpu_s = CPU time of the "
               "rest of the machine during the phase, max over runs):")
    out.append("")
    out.append("| tool | phase | runs | user s | sys s | CPU % | peak RSS MiB (med / max) | other_cpu_s (med / max) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for t in (RESTIC, BORG, LB):
        for ph in PHASES:
            s = phase_stats(rows, t, ph)
            if s:
                out.append("| %s | %s | %d | %s | %s | %s | %.0f / %.0f | %.1f / %.1f |" % (
                    t, ph, s["n"], fmt(s["user"]), fmt(s["sys"]), fmt(s["cpu"], 0),
                    s["rss_med"], s["rss_max"], s["other_med"], s["other_max"]))
    out.append("")
    if sizes:
        out.append("| tool | repo after initial MiB | repo after incremental MiB | incremental growth MiB | restores verified |")
        out.append("|---|---|---|---|---|")
        by = {}
        for t in dict.fromkeys(s["tool"] for s in sizes):
            ss = [s for s in sizes if s["tool"] == t]
            r0 = med([s["repo_initial_b"] for s in ss]) / 2**20
            r1 = med([s["repo_incr_b"] for s in ss]) / 2**20
            by[t] = (r0, r1)
            out.append("| %s | %.1f | %.1f | %.1f | %s |" % (
                t, r0, r1, r1 - r0, ",".join(s["restore_ok"] for s in ss)))
        out.append("")
        if LB in by and RESTIC in by:
            ratio = by[LB][1] / by[RESTIC][1]
            out.append("Repository size lifeboat/restic: %.3f after initial, %.3f after incremental "
                       "(lifeboat/borg %s)." % (by[LB][0] / by[RESTIC][0], ratio,
                                                fmt(by[LB][1] / by[BORG][1], 3) if BORG in by else "—"))
            out.append("")
            if name == "disk":
                verdicts.append(("repository size", "≤ restic", "%.3f × restic" % ratio,
                                 ratio <= 1.0 and by[LB][0] <= by[RESTIC][0]))
        bad = [s for s in sizes if s["restore_ok"] != "yes"]
        if bad:
            out.append("**Restore NOT bit-exact for: %s**" % ", ".join(
                "%s run %s" % (s["tool"], s["run"]) for s in bad))
            out.append("")
    if name == "disk":
        rss = [phase_stats(rows, LB, p) for p in ("backup_initial", "backup_incr")]
        rss = [s for s in rss if s]
        if rss:
            peak = max(s["rss_max"] for s in rss)
            verdicts.append(("peak RSS of lifeboat backup", "≤ %d MiB" % RSS_TARGET_MIB,
                             "%.0f MiB (max over runs)" % peak, peak <= RSS_TARGET_MIB))
    return out


def snapshots_table(path, verdicts):
    rows = read_tsv(path)
    if not rows:
        return []
    out = ["### `snapshots` listing (hyperfine, %s)" % path, ""]
    out.append("| tool | snapshots in repo | runs | median s | min–max s | peak RSS MiB |")
    out.append("|---|---|---|---|---|---|")
    for r in rows:
        out.append("| %s | %s | %s | %.3f | %.3f–%.3f | %.0f |" % (
            r["tool"], r["snapshots"], r["runs"], float(r["median_s"]), float(r["min_s"]),
            float(r["max_s"]), float(r["maxrss_kb"]) / 1024))
        if r["tool"] == LB and r["snapshots"] != "0":
            verdicts.append(("`snapshots` with %s snapshots" % r["snapshots"], "≤ %.1f s" % SNAP_TARGET_S,
                             "%.3f s" % float(r["median_s"]), float(r["median_s"]) <= SNAP_TARGET_S))
    out.append("")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/work/bench-work")
    ap.add_argument("--baseline", help="take restic/borg rows from this WORK dir (for "
                    "lifeboat-only runs, TOOLS=extra); the output says so")
    a = ap.parse_args()
    verdicts = []
    out = ["## Lifeboat vs restic vs borg (medians, min–max in parentheses)", ""]
    if a.baseline:
        out += ["restic and borg rows come from %s (an earlier run), lifeboat rows from %s." % (
            a.baseline, a.work), ""]
    for v in ("disk", "tmpfs"):
        base = os.path.join(a.baseline, v, "results") if a.baseline else None
        out += variant_table(v, os.path.join(a.work, v, "results"), verdicts, base)
    out += snapshots_table(os.path.join(a.work, "snapshots", "snapshots.tsv"), verdicts)
    if verdicts:
        out.append("### Targets")
        out.append("")
        out.append("| target | required | measured (lifeboat/restic / lifeboat/borg) | |")
        out.append("|---|---|---|---|")
        for what, req, got, ok in verdicts:
            out.append("| %s | %s | %s | %s |" % (what, req, got, "**met**" if ok else "missed"))
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
