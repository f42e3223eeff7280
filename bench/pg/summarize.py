#!/usr/bin/env python3
"""Summarize bench/postgres.sh: medians (min-max) per tool and setting, Lifeboat/pgBackRest
ratios, and the issue's targets met or missed. Prints Markdown.

    python3 bench/pg/summarize.py bench/results/<date>/pg-<rev>

Every CSV may hold rows of reruns: the newest row of each label wins. Run labels end in -rN.
"""
import csv
import glob
import os
import re
import statistics as st
import sys

RES = sys.argv[1] if len(sys.argv) > 1 else "."


def rows(name):
    p = os.path.join(RES, name)
    if not os.path.exists(p):
        return {}
    out = {}
    with open(p) as f:
        for r in csv.DictReader(f):
            out[r["label"]] = r  # newest row of a label wins
    return out


T = rows("timings.csv")
C = rows("conditions.csv")
SIZES = rows("repo-size.csv")
LBB = rows("lb-backups.csv")
PITR = rows("pitr.csv")
DRAIN = rows("wal-drain.csv")


def runs(prefix, table):
    """Labels prefix-r1, prefix-r2, ... present in table, sorted by run."""
    pat = re.compile(re.escape(prefix) + r"-r(\d+)$")
    ls = [(int(m.group(1)), l) for l in table for m in [pat.match(l)] if m]
    return [l for _, l in sorted(ls)]


def f(x):
    return float(x) if x not in (None, "") else None


def agg(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"n": len(xs), "med": st.median(xs), "min": min(xs), "max": max(xs)}


def cell(a, nd=2, unit=""):
    if not a:
        return "—"
    return "%.*f%s (%.*f–%.*f)" % (nd, a["med"], unit, nd, a["min"], nd, a["max"])


def other_cpu(label, tlabel=None):
    c, t = C.get(label), T.get(tlabel or label)
    if not c or not t:
        return None
    return f(c["machine_cpu_s"]) - f(t["user_s"]) - f(t["sys_s"])


def timing(prefix, mlabel=None):
    ls = runs(prefix, T)
    wall = agg([f(T[l]["wall_s"]) for l in ls])
    cpu = agg([f(T[l]["user_s"]) + f(T[l]["sys_s"]) for l in ls])
    rss = agg([f(T[l]["maxrss_mib"]) for l in ls])
    oth = []
    for l in ls:
        ml = l if mlabel is None else mlabel(l)
        oth.append(other_cpu(ml, l))
    bad = [l for l in ls if T[l]["rc"] != "0"]
    noisy = [l for l in ls if C.get(l, {}).get("quiet_ok") == "0"]
    return {"labels": ls, "wall": wall, "cpu": cpu, "rss": rss, "other": agg(oth), "bad": bad, "noisy": noisy}


def ratio(a, b):
    return a / b if a is not None and b else None


def verdict(ok):
    return "**met**" if ok else "**missed**"


out = []
w = out.append
m = os.path.join(RES, "machine.txt")
if os.path.exists(m):
    w("Machine and versions (`machine.txt`):")
    w("")
    w("```")
    seen = []
    for line in open(m):
        if line not in seen:
            seen.append(line)
    w("".join(seen).rstrip())
    w("```")
    w("")

targets = []

# ---- 1. base backup ------------------------------------------------------------------------
w("### 1. Full base backup (seconds; medians of runs, min–max)")
w("")
w("| tool, setting | wall s | CPU s (user+sys) | peak RSS MiB | other_cpu_s | stored MiB |")
w("|---|---|---|---|---|---|")
bk = {}
for key, name in [("pgbr-full-default", "pgBackRest defaults (gz, 1 process)"),
                  ("pgbr-full-p2-lz4", "pgBackRest --process-max=2 lz4"),
                  ("pgbr-full-p2-zst1", "pgBackRest --process-max=2 zst level 1"),
                  ("lb-full", "Lifeboat `pg backup` (empty repository)")]:
    t = timing(key)
    bk[key] = t
    if key.startswith("pgbr"):
        sz = agg([f(SIZES[l]["set_bytes"]) / 2**20 for l in runs(key, SIZES)])
    else:
        sz = agg([f(LBB[l]["bytes_stored"]) / 2**20 for l in runs(key, LBB) if LBB[l]["bytes_stored"]])
    w("| %s | %s | %s | %s | %s | %s |" % (name, cell(t["wall"]), cell(t["cpu"]), cell(t["rss"], 0),
                                          cell(t["other"], 1), cell(sz, 0)))
w("")
lbw = bk["lb-full"]["wall"]
dflt = bk["pgbr-full-default"]["wall"]
fast = min([bk[k]["wall"] for k in ("pgbr-full-p2-lz4", "pgbr-full-p2-zst1") if bk[k]["wall"]],
           key=lambda a: a["med"], default=None)
if lbw and dflt and fast:
    r1, r2 = lbw["med"] / dflt["med"], lbw["med"] / fast["med"]
    targets.append(("1. base backup ≤ 1/2 of pgBackRest default", "%.2f s" % dflt["med"], "%.2f s" % lbw["med"], r1, "≤ 0.50", r1 <= 0.5))
    targets.append(("1. base backup ≤ pgBackRest 2 processes, fastest compression", "%.2f s" % fast["med"], "%.2f s" % lbw["med"], r2, "≤ 1.00", r2 <= 1.0))

# ---- 2. incremental ------------------------------------------------------------------------
bases = {}
p = os.path.join(RES, "incr-bases.csv")
if os.path.exists(p):
    for line in open(p):
        rr, b = line.strip().split(",")
        bases[rr] = b


def lb_full_stored(label):
    repo = LBB[label]["repo"]
    fulls = [r for r in LBB.values() if r["repo"] == repo and r["kind"] == "full"]
    return f(fulls[-1]["bytes_stored"]) if fulls else None


def lb_full_nowal(label):
    repo = LBB[label]["repo"]
    fulls = [r for r in LBB.values() if r["repo"] == repo and r["kind"] == "full"]
    return f(fulls[-1]["repo_nowal_bytes"]) if fulls else None


def pgbr_full_bytes(label):
    run = label.rsplit("-r", 1)[1]
    base = bases.get("r" + run, "full-r" + run)
    for key in ("pgbr-full-default-r" + run if base.startswith("full") else "pgbr-incr-base-r" + run,):
        if key in SIZES:
            return f(SIZES[key]["set_bytes"])
    return None


w("### 2. Second base backup after 5 % of pgbench_accounts rows changed")
w("")
w("Stored growth = bytes the second backup added to the repository (pgBackRest: the incremental "
  "set's directory; Lifeboat: `summary.stored_bytes` of `pg backup --json`, i.e. new compressed chunks, "
  "WAL excluded) divided by what the same tool's full backup stored.")
w("")
w("| update | tool | wall s | CPU s | stored MiB | stored / full | Lifeboat repo growth without WAL / after full |")
w("|---|---|---|---|---|---|---|")
for kind, desc in [("contig", "contiguous 5 % (key range)"), ("random", "random 5 % (aid % 20 = N)")]:
    tp = timing("pgbr-incr-" + kind)
    tl = timing("lb-incr-" + kind)
    pl = runs("pgbr-incr-" + kind, SIZES)
    ll = runs("lb-incr-" + kind, LBB)
    psz = agg([f(SIZES[l]["set_bytes"]) / 2**20 for l in pl])
    pfr = agg([f(SIZES[l]["set_bytes"]) / pgbr_full_bytes(l) for l in pl if pgbr_full_bytes(l)])
    lsz = agg([f(LBB[l]["bytes_stored"]) / 2**20 for l in ll])
    lfr = agg([f(LBB[l]["bytes_stored"]) / lb_full_stored(l) for l in ll if lb_full_stored(l)])
    lgr = agg([f(LBB[l]["repo_growth_nowal_bytes"]) / lb_full_nowal(l) for l in ll if lb_full_nowal(l)])
    w("| %s | pgBackRest incr (defaults) | %s | %s | %s | %s | |" % (desc, cell(tp["wall"]), cell(tp["cpu"]), cell(psz, 0), cell(pfr, 3)))
    w("| %s | Lifeboat second `pg backup` | %s | %s | %s | %s | %s |" % (desc, cell(tl["wall"]), cell(tl["cpu"]), cell(lsz, 1), cell(lfr, 3), cell(lgr, 3)))
    if tp["wall"] and tl["wall"] and lfr:
        rt = tl["wall"]["med"] / tp["wall"]["med"]
        targets.append(("2. %s: stored growth ≤ 15 %% of a full" % desc, "%.1f %%" % (100 * pfr["med"]) if pfr else "—",
                        "%.1f %%" % (100 * lfr["med"]), lfr["med"], "≤ 0.15", lfr["med"] <= 0.15))
        targets.append(("2. %s: time ≤ 1/3 of pgBackRest incr" % desc, "%.2f s" % tp["wall"]["med"], "%.2f s" % tl["wall"]["med"], rt, "≤ 0.33", rt <= 1 / 3))
w("")

# ---- 3. WAL push -----------------------------------------------------------------------------
def calls(prefix):
    """Every call of every run: (wall list, cpu list)."""
    ws, cs = [], []
    for fn in sorted(glob.glob(os.path.join(RES, "archive-latency-%s-r*.tsv" % prefix))):
        for line in open(fn):
            if not line[0].isdigit():
                continue
            x = line.rstrip("\n").split("\t")
            ws.append(float(x[0]))
            if len(x) >= 3:
                cs.append(float(x[-3]) + float(x[-2]) if prefix.startswith("lb") else float(x[1]) + float(x[2]))
    return ws, cs


w("### 3a. One archive command per 16 MiB segment (every call of every run; includes process start and `runuser`)")
w("")
w("| command | calls | median s | min–max s | p90 s | median CPU s |")
w("|---|---|---|---|---|---|")
lat = {}
for key, name in [("pgbr-push-gz", "pgBackRest archive-push, gz (default)"), ("pgbr-push-lz4", "pgBackRest archive-push, lz4"),
                  ("lb-push", "Lifeboat `pg wal-push`"), ("runuser-true", "`runuser -u postgres -- true` (overhead in every row)")]:
    ws, cs = calls(key)
    if not ws:
        continue
    ws2 = sorted(ws)
    p90 = ws2[min(len(ws2) - 1, int(0.9 * len(ws2)))]
    lat[key] = st.median(ws)
    w("| %s | %d | %.3f | %.3f–%.3f | %.3f | %s |" % (name, len(ws), st.median(ws), min(ws), max(ws), p90,
                                                    "%.3f" % st.median(cs) if cs else "—"))
w("")
if "lb-push" in lat:
    targets.append(("3. `wal-push` of a 16 MiB segment ≤ 50 ms (median, with process start)",
                    "%.3f s gz / %.3f s lz4" % (lat.get("pgbr-push-gz", 0), lat.get("pgbr-push-lz4", 0)),
                    "%.3f s" % lat["lb-push"], lat["lb-push"] / 0.050, "≤ 1.00 (of 50 ms)", lat["lb-push"] <= 0.050))

w("### 3b. Archive catch-up: a backlog of WAL segments drained by the archive_command")
w("")
w("| archiver | segments | drain s | segments/s | MiB/s | CPU s per segment (whole machine) | failed |")
w("|---|---|---|---|---|---|---|")
dr = {}
for key, name in [("pgbr-drain-gz-sync", "pgBackRest gz, synchronous (defaults)"),
                  ("pgbr-drain-lz4-async", "pgBackRest lz4, async, process-max=2"),
                  ("lb-drain-sync", "Lifeboat, synchronous"),
                  ("lb-drain-async", "Lifeboat --async (pusher: 2 at a time)")]:
    ls = runs(key, DRAIN)
    if not ls:
        continue
    a = agg([f(DRAIN[l]["seg_per_s"]) for l in ls])
    dr[key] = a
    w("| %s | %s | %s | %s | %s | %s | %s |" % (
        name, "/".join(DRAIN[l]["segments"] for l in ls), cell(agg([f(DRAIN[l]["drain_s"]) for l in ls])), cell(a),
        cell(agg([f(DRAIN[l]["MiB_per_s"]) for l in ls]), 1), cell(agg([f(DRAIN[l]["cpu_s_per_seg"]) for l in ls]), 3),
        "/".join(DRAIN[l]["failed_count"] for l in ls)))
w("")
best = dr.get("pgbr-drain-lz4-async")
for key, name in [("lb-drain-sync", "synchronous"), ("lb-drain-async", "--async")]:
    if best and key in dr:
        r_ = dr[key]["med"] / best["med"]
        targets.append(("3. sustained archiving (%s) ≥ pgBackRest best (lz4 async 2 proc)" % name,
                        "%.1f seg/s" % best["med"], "%.1f seg/s" % dr[key]["med"], r_, "≥ 1.00", r_ >= 1.0))

# ---- 4. restore and PITR ----------------------------------------------------------------------
w("### 4a. Restore of the base backup (restore command only, before replay)")
w("")
w("| tool, setting | wall s | CPU s | peak RSS MiB | other_cpu_s |")
w("|---|---|---|---|---|")
rs = {}
for key, name in [("pgbr-restore-default", "pgBackRest defaults (gz set, 1 process)"),
                  ("pgbr-restore-p2", "pgBackRest --process-max=2 (gz set)"),
                  ("pgbr-restore-p2-lz4", "pgBackRest --process-max=2 (lz4 set)"),
                  ("lb-restore", "Lifeboat `pg restore --immediate`")]:
    t = timing(key)
    rs[key] = t["wall"]
    w("| %s | %s | %s | %s | %s |" % (name, cell(t["wall"]), cell(t["cpu"]), cell(t["rss"], 0), cell(t["other"], 1)))
w("")
if rs.get("lb-restore") and rs.get("pgbr-restore-default"):
    lbm = rs["lb-restore"]["med"]
    p2 = min([rs[k] for k in ("pgbr-restore-p2", "pgbr-restore-p2-lz4") if rs.get(k)], key=lambda a: a["med"])
    targets.append(("4. restore ≤ 1/2 of pgBackRest default", "%.2f s" % rs["pgbr-restore-default"]["med"], "%.2f s" % lbm,
                    lbm / rs["pgbr-restore-default"]["med"], "≤ 0.50", lbm / rs["pgbr-restore-default"]["med"] <= 0.5))
    targets.append(("4. restore ≤ pgBackRest 2 processes (faster set)", "%.2f s" % p2["med"], "%.2f s" % lbm,
                    lbm / p2["med"], "≤ 1.00", lbm <= p2["med"]))

w("### 4b. Point-in-time restore: restore + start + replay to a target LSN until promoted")
w("")
pw = {}
p = os.path.join(RES, "pitr-wal.csv")
if os.path.exists(p):
    for r in csv.DictReader(open(p)):
        pw[r["run"]] = r
w("| tool | WAL replayed MiB | restore s | start → promoted s | total s | first connection s |")
w("|---|---|---|---|---|---|")
tot = {}
for tool, name, col in [("pgbr", "pgBackRest (defaults: restore 1 process, archive-get synchronous)", "pgbr_replay_mib"),
                        ("lb", "Lifeboat (`pg restore --to-lsn`, prefetch 16)", "lb_replay_mib")]:
    ls = runs(tool, PITR)
    rest = [f(T.get("pitr-restore-" + l, {}).get("wall_s")) for l in ls]
    prom = [f(PITR[l]["promoted_s"]) for l in ls]
    first = [f(PITR[l]["first_conn_s"]) for l in ls]
    tt = [a + b for a, b in zip(rest, prom) if a is not None and b is not None]
    mib = agg([f(pw[l.rsplit("-", 1)[1]][col]) for l in ls if l.rsplit("-", 1)[1] in pw])
    tot[tool] = agg(tt)
    w("| %s | %s | %s | %s | %s | %s |" % (name, cell(mib, 0), cell(agg(rest)), cell(agg(prom)), cell(tot[tool]), cell(agg(first))))
w("")
if tot.get("lb") and tot.get("pgbr"):
    r_ = tot["lb"]["med"] / tot["pgbr"]["med"]
    targets.append(("4. point-in-time restore (1.1 GiB of WAL) ≤ 1/2 of pgBackRest", "%.2f s" % tot["pgbr"]["med"],
                    "%.2f s" % tot["lb"]["med"], r_, "≤ 0.50", r_ <= 0.5))

# ---- targets ------------------------------------------------------------------------------------
w("### Targets")
w("")
w("| target | pgBackRest | Lifeboat | ratio | required | |")
w("|---|---|---|---|---|---|")
for what, pv, lv, r_, req, ok in targets:
    w("| %s | %s | %s | %.2f | %s | %s |" % (what, pv, lv, r_, req, verdict(ok)))
w("")

# ---- conditions ---------------------------------------------------------------------------------
noisy = [l for l, c in C.items() if c.get("quiet_ok") == "0"]
failed = [l for l, c in C.items() if c.get("rc") not in ("0", None)]
waits = [int(c["quiet_wait_s"]) for c in C.values() if c.get("quiet_wait_s")]
w("Conditions: %d measurements; quiet check timed out (noisy) for: %s; failed: %s; waits for a quiet "
  "machine: total %d s, longest %d s." % (len(C), ", ".join(noisy) or "none", ", ".join(failed) or "none",
                                          sum(waits), max(waits, default=0)))
print("\n".join(out))
