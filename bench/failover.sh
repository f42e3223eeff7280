#!/usr/bin/env bash
# PostgreSQL high availability: Lifeboat's failover against Patroni and pg_auto_failover, with the
# same probe, on the same machine, in one run (issue 4).
#
# Usage:  bash bench/failover.sh           (as root; settings via environment variables)
#
# The probe is the shared, system-agnostic ../shared/bench/failover/failover_probe.py (called, not
# copied): a writer inserts one row every 10 ms (autocommit, one id per statement, an id counts as
# acknowledged when COMMIT returned), a fault after a random warm-up, then RTO = fault -> first
# acknowledged write on another member, RPO = acknowledged ids missing on the new primary.
# It is run through bench/failover_probe_node.py, which names each connection by the server that
# answers it (inet_server_port()) instead of by the DSN: through Lifeboat's proxy the DSN address
# never changes, so the unmodified probe could not see a failover. Patroni and pg_auto_failover are
# measured by the shared run-*.sh scripts (multi-host libpq DSN, target_session_attrs=read-write).
#
# Configurations (PHASES, in this order; each appends one JSON line per trial to $RES/<phase>.jsonl):
#   lb-sync        fresh two-member cluster per trial (`lifeboat cluster bootstrap`, replication =
#                  "sync", every other setting default), `lifeboat run -v` in the background; once
#                  `lifeboat status --json` shows phase healthy and a failover target: the writer
#                  through the proxy's write port, then SIGKILL of the primary's postmaster and all
#                  its backends at once (PostgreSQL node loss; the daemon is the monitor and lives)
#   lb-async       the same with replication = "async" (RPO: count and age of lost writes)
#   lb-blip        SIGSTOP of the primary's postmaster and backends for BLIP_S (0.5 s = half the
#                  default detection threshold: interval 250 ms x fall 3 + timeout 250 ms), then
#                  SIGCONT; probe --mode blip: false failover?, max write gap, lost rows
#   lb-switchover  `lifeboat switchover --to <standby>` under the writer (probe --mode blip):
#                  write gap, failed statements, lost rows
#   patroni-default   run-patroni-trials.sh, Patroni defaults (ttl 30, loop_wait 10,
#                  retry_timeout 10), synchronous_mode on (like Lifeboat's sync)
#   patroni-tuned  same, ttl 10, loop_wait 2, retry_timeout 3 (as low as Debian's 3.0.2 accepts)
#   pgaf-tuned     run-pgaf-trials.sh with the monitor's health checks as tight as they go (1 s
#                  period/timeout, 1 retry after 0.5 s, unhealthy/demote timeouts 3 s)
#   patroni-switchover   run-patroni-switchover.sh (defaults, synchronous_mode on)
#   patroni-default-async patroni-tuned-async   (not in the default PHASES) the async variants
#   summary        medians, min-max, ratios -> $RES/summary.md (reads every $RES/*.jsonl)
#
# Environment:
#   TRIALS=10            trials per Lifeboat configuration
#   TRIALS_PEERS=$TRIALS trials per Patroni / pg_auto_failover configuration (a Patroni default
#                        trial takes ~60 s; say so when this is smaller)
#   PHASES="lb-sync lb-async lb-blip lb-switchover patroni-default patroni-tuned pgaf-tuned patroni-switchover summary"
#   WARMUP_MIN=3 WARMUP_MAX=6   Lifeboat warm-up before the fault (the peers keep the shared
#                        scripts' 5-15 s: their loops are 2-10 s long, Lifeboat's 0.25 s)
#   BLIP_S=0.5 OBSERVE=10       pause length and observation window of lb-blip / lb-switchover
#   WORK=/work/bench-failover   work dir: sources, binary, scratch clusters (BENCH_BASE=$WORK/fobench
#                        for the shared scripts, Lifeboat's clusters under $WORK/lb)
#   LIFEBOAT_REV=HEAD    commit to build: clean `git archive` into $WORK/src-<rev>, release build
#                        with CARGO_TARGET_DIR=/work/target-bench, binary copied to $WORK/bin
#   LB=<path>            use this lifeboat binary instead of building (give LIFEBOAT_REV too)
#   RES=bench/results/<UTC date>/failover-<rev>   raw results
#   SUFFIX=              appended to the phases' file names: a re-run of a configuration
#                        (SUFFIX=-rerun PHASES="lb-switchover summary") lands beside the first
#                        run instead of mixing with it; the summary shows both
#   INSTALL=1            apt-get install what is missing (postgresql-15 etcd-server etcd-client
#                        patroni postgresql-15-auto-failover python3-psycopg2)
#
# Output in $RES: <phase>.jsonl (raw probe lines; Lifeboat lines also carry the daemon's
# last_transition and the load of the machine), logs/ (daemon logs with -v, the members'
# PostgreSQL logs, bootstrap output, status after each trial), load.tsv (load1 and compiler processes every 5 s: other engineers
# build and test on this 2-core machine), machine.txt, command.txt, summary.md.
set -euo pipefail

# Helper mode for the probe's --victim-cmd/--kill-cmd: the PIDs of the current primary's
# postmaster and all its children (from `lifeboat status --json` and postmaster.pid).
if [ "${1:-}" = --primary-pids ]; then
  cfg="$2" lb="$3"
  name="$("$lb" --json status --config "$cfg" 2>/dev/null | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["primary"])')"
  pm="$(head -1 "$(dirname "$cfg")/pg/$name/postmaster.pid")"
  echo "$pm $(ps -o pid= --ppid "$pm" | tr -d ' ' | tr '\n' ' ')"
  exit 0
fi

ROOT="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
SHARED="${SHARED:-$ROOT/../shared/bench/failover}"
[ -f "$SHARED/failover_probe.py" ] || { echo "failover harness not found: $SHARED" >&2; exit 1; }
SHARED="$(cd "$SHARED" && pwd)"
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL runs as postgres)" >&2; exit 1; }

TRIALS="${TRIALS:-10}"; TRIALS_PEERS="${TRIALS_PEERS:-$TRIALS}"
PHASES="${PHASES:-lb-sync lb-async lb-blip lb-switchover patroni-default patroni-tuned pgaf-tuned patroni-switchover summary}"
WARMUP_MIN="${WARMUP_MIN:-3}"; WARMUP_MAX="${WARMUP_MAX:-6}"
BLIP_S="${BLIP_S:-0.5}"; OBSERVE="${OBSERVE:-10}"; SUFFIX="${SUFFIX:-}"
WORK="${WORK:-/work/bench-failover}"
INSTALL="${INSTALL:-1}"
PY=/usr/bin/python3     # Debian's python3-psycopg2 (a pyenv python3 on PATH lacks it)
PGBIN=/usr/lib/postgresql/15/bin
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-bench}"
CMDLINE="$(for v in TRIALS TRIALS_PEERS PHASES WARMUP_MIN WARMUP_MAX BLIP_S OBSERVE SUFFIX LIFEBOAT_REV LB; do
  if [ -n "${!v:-}" ]; then printf '%s=%q ' "$v" "${!v}"; fi; done)bash bench/failover.sh"

# ---- tools ------------------------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
  missing=()
  [ -x "$PGBIN/postgres" ] || missing+=(postgresql-15)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v patroni >/dev/null || missing+=(patroni)
  command -v pg_autoctl >/dev/null || missing+=(postgresql-15-auto-failover)
  "$PY" -c 'import psycopg2' 2>/dev/null || missing+=(python3-psycopg2)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  fi
fi

# ---- lifeboat (release, from a clean export of a commit) ----------------------------------------
mkdir -p "$WORK"; chmod 755 "$WORK"
if [ -n "${LB:-}" ]; then
  REV="$(git -C "$ROOT" rev-parse --short "${LIFEBOAT_REV:?LB needs LIFEBOAT_REV}")"
else
  REV="$(git -C "$ROOT" rev-parse --short "${LIFEBOAT_REV:-HEAD}")"
  if [ ! -x "$WORK/bin/lifeboat-$REV" ]; then
    SRC="$WORK/src-$REV"
    if [ ! -d "$SRC" ]; then
      rm -rf "$SRC.tmp"; mkdir -p "$SRC.tmp"
      git -C "$ROOT" archive "$REV" | tar -x -C "$SRC.tmp"
      mv "$SRC.tmp" "$SRC"
    fi
    echo "building lifeboat $REV from $SRC (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$SRC" && cargo build --release -p lifeboat-cli)
    mkdir -p "$WORK/bin"
    cp "$CARGO_TARGET_DIR/release/lifeboat" "$WORK/bin/lifeboat-$REV.tmp"
    mv "$WORK/bin/lifeboat-$REV.tmp" "$WORK/bin/lifeboat-$REV"
  fi
  LB="$WORK/bin/lifeboat-$REV"
fi
RES="${RES:-$ROOT/bench/results/$(date -u +%Y-%m-%d)/failover-$REV}"
mkdir -p "$RES/logs"
LOG="$RES/run.log"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
log "lifeboat $REV: $LB ($(sha256sum "$LB" | cut -c1-16)); results in $RES"
echo "$CMDLINE" >>"$RES/command.txt"
if [ -f "$RES/machine.txt" ]; then   # a later invocation (re-run) into the same directory
  echo "later run: $(date -u +%FT%TZ) $CMDLINE (load1 $(cut -d' ' -f1 /proc/loadavg))" >>"$RES/machine.txt"
else {
  echo "date: $(date -u +%FT%TZ)"; echo "command: $CMDLINE"
  echo "lifeboat: $REV $("$LB" --version 2>/dev/null || true)"
  echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "mem: $(free -m | awk '/Mem:/{print $2}') MiB; kernel $(uname -r)"
  echo "postgres: $("$PGBIN/postgres" --version)"
  echo "patroni: $(patroni --version 2>&1 | head -1)"
  echo "pg_autoctl: $(pg_autoctl --version 2>&1 | head -1)"
  echo "etcd: $(etcd --version 2>&1 | head -1)"
  echo "note: shared 2-core machine; other engineers build and run tests at the same time (load.tsv)"
} >"$RES/machine.txt"; fi

# ---- processes we start, stopped by PID ----------------------------------------------------------
export BENCH_BASE="$WORK/fobench"
LOADPID="" DPID="" LBDIR="" LBTAG="" PGPIDS=""
lb_down() {  # stop the daemon, then the members' postmasters, by PID; remove the cluster dir
  local p
  if [ -n "$DPID" ]; then
    kill -TERM "$DPID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    DPID=""
  fi
  if [ -n "$LBDIR" ]; then
    local f
    for f in "$LBDIR"/pg/*/postmaster.pid; do [ -f "$f" ] && PGPIDS="$PGPIDS $(head -1 "$f")"; done
  fi
  for p in $PGPIDS; do kill -QUIT "$p" 2>/dev/null || true; done   # immediate shutdown
  for p in $PGPIDS; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  PGPIDS=""
  if [ -n "$LBDIR" ]; then
    for f in "$LBDIR"/pg/*.log; do [ -f "$f" ] && cp "$f" "$RES/logs/$LBTAG.$(basename "$f")"; done
    rm -rf "$LBDIR"
  fi
  LBDIR=""
}
cleanup() {
  lb_down || true
  [ -n "$LOADPID" ] && kill "$LOADPID" 2>/dev/null || true
  # the shared scripts clean up after themselves (their own traps); nothing of theirs runs here
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# machine load every 5 s: load1, runnable, compiler/test processes (foreign load)
(
  [ -f "$RES/load.tsv" ] || printf 'utc\tload1\trunnable\trustc_cc_processes\n' >"$RES/load.tsv"
  while :; do
    printf '%s\t%s\t%s\t%s\n' "$(date -u +%T)" "$(cut -d' ' -f1 /proc/loadavg)" \
      "$(cut -d' ' -f4 /proc/loadavg | cut -d/ -f1)" \
      "$(ps -eo comm= | grep -c -E '^(rustc|cc|cc1|cc1plus|ld|ld.lld|mold|cargo)$' || true)" >>"$RES/load.tsv"
    sleep 5
  done
) &
LOADPID=$!

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- Lifeboat: one fresh two-member cluster per trial --------------------------------------------
CFG=""
lb_status() { "$LB" --json status --config "$CFG" 2>/dev/null || true; }
lb_field() {  # lb_field <python expression over s>
  lb_status | "$PY" -c "import json,sys
try: s=json.load(sys.stdin)
except Exception: sys.exit(0)
v=$1
print('' if v is None else v)"
}
lb_up() {  # lb_up <replication> <tag>: bootstrap + daemon, wait until protected
  local repl="$1" tag="$2"
  LBDIR="$(mktemp -d "$WORK/lb/$tag.XXXXXX")"; chmod 755 "$LBDIR"; LBTAG="$tag"
  local p1 p2 pw pr pa
  p1=$(free_port); p2=$(free_port); pw=$(free_port); pr=$(free_port); pa=$(free_port)
  CFG="$LBDIR/lifeboat.toml"
  cat >"$CFG" <<EOF
[cluster]
name = "bench"
replication = "$repl"

[[cluster.member]]
name = "m1"
host = "127.0.0.1"
port = $p1
data_dir = "$LBDIR/pg/m1"

[[cluster.member]]
name = "m2"
host = "127.0.0.1"
port = $p2
data_dir = "$LBDIR/pg/m2"

[coordinator]
url = "embedded"
state = "$LBDIR/state.sqlite"

[proxy]
listen = "127.0.0.1:$pw"
read_listen = "127.0.0.1:$pr"

[api]
listen = "127.0.0.1:$pa"
token = "bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
EOF
  chmod 600 "$CFG"
  PROXY_DSN="host=127.0.0.1 port=$pw dbname=postgres user=postgres connect_timeout=2"
  if ! "$LB" cluster bootstrap --config "$CFG" >"$RES/logs/$tag.bootstrap.log" 2>&1; then
    log "bootstrap failed: $(tail -3 "$RES/logs/$tag.bootstrap.log")"; return 1
  fi
  "$LB" -v run --config "$CFG" >"$RES/logs/$tag.daemon.log" 2>&1 &
  DPID=$!
  local end=$(( $(date +%s) + 90 ))
  until [ "$(lb_field "s['phase']=='healthy' and s.get('failover_target') is not None and (s['proxy'].get('routed_to') is not None)")" = True ]; do
    if [ "$(date +%s)" -ge "$end" ] || ! kill -0 "$DPID" 2>/dev/null; then
      log "cluster $tag not protected after 90 s: $(lb_status | head -c 600)"; return 1
    fi
    sleep 0.2
  done
}
lb_standby() { lb_field "[m['name'] for m in s['members'] if m['name']!=s['primary']][0]"; }
# after a trial: status (last_transition) into the log dir and into the trial's JSON line
lb_annotate() {  # lb_annotate <jsonl> <tag> <load1 at start>
  lb_status >"$RES/logs/$2.status.json"
  "$PY" - "$1" "$RES/logs/$2.status.json" "$2" "$3" <<'EOF' || true
import json, sys
out, st, tag, load = sys.argv[1:5]
lines = open(out).read().splitlines()
if not lines: sys.exit(0)
r = json.loads(lines[-1])
if r.get("trial_tag") == tag: sys.exit(0)
try: s = json.load(open(st))
except Exception: s = {}
r.update(trial_tag=tag, load1_at_start=float(load), lb_phase_after=s.get("phase"),
         lb_primary_after=s.get("primary"), lb_generation=(s.get("coordinator") or {}).get("generation"),
         lb_last_transition=s.get("last_transition"))
lines[-1] = json.dumps(r)
open(out, "w").write("\n".join(lines) + "\n")
EOF
}
probe() { "$PY" "$ROOT/bench/failover_probe_node.py" --probe "$SHARED/failover_probe.py" "$@"; }
me="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

lb_trials() {  # lb_trials <phase> <replication> <kind: kill|blip|switchover>
  local phase="$1" repl="$2" kind="$3" n tag load out="$RES/$1$SUFFIX.jsonl"
  mkdir -p "$WORK/lb"
  for n in $(seq 1 "$TRIALS"); do
    tag="$phase$SUFFIX-t$n"
    log "=== $phase trial $n/$TRIALS (load1 $(cut -d' ' -f1 /proc/loadavg))"
    if ! lb_up "$repl" "$tag"; then lb_down; continue; fi
    load="$(cut -d' ' -f1 /proc/loadavg)"
    case "$kind" in
      kill)
        probe --dsn "$PROXY_DSN" --victim-cmd "bash '$me' --primary-pids '$CFG' '$LB'" \
          --warmup-min "$WARMUP_MIN" --warmup-max "$WARMUP_MAX" --max-wait 60 \
          --label "lifeboat $repl (defaults), SIGKILL postmaster+backends" --out "$out" >/dev/null \
          || log "probe failed" ;;
      blip)
        probe --mode blip --dsn "$PROXY_DSN" \
          --kill-cmd "p=\$(bash '$me' --primary-pids '$CFG' '$LB'); kill -STOP \$p; sleep $BLIP_S; kill -CONT \$p" \
          --observe "$OBSERVE" --warmup-min "$WARMUP_MIN" --warmup-max "$WARMUP_MAX" --client-timeout 3 \
          --label "lifeboat $repl (defaults), SIGSTOP postmaster+backends ${BLIP_S}s" --out "$out" >/dev/null \
          || log "probe failed" ;;
      switchover)
        local to; to="$(lb_standby)"
        probe --mode blip --dsn "$PROXY_DSN" \
          --kill-cmd "'$LB' switchover --config '$CFG' --to $to >>'$RES/logs/$tag.switchover.log' 2>&1" \
          --observe "$OBSERVE" --warmup-min "$WARMUP_MIN" --warmup-max "$WARMUP_MAX" --client-timeout 3 \
          --label "lifeboat $repl (defaults), switchover" --out "$out" >/dev/null \
          || log "probe failed" ;;
    esac
    lb_annotate "$out" "$tag" "$load"
    tail -1 "$out" | "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); print({k:r.get(k) for k in ("rto_s","rpo_rows","rpo_ms","failover_happened","max_write_gap_s","errors_after_start","lb_phase_after")})' | tee -a "$LOG" >&2 || true
    lb_down
  done
}

# ---- the peers, through the shared scripts --------------------------------------------------------
peer() {  # peer <phase>
  local out="$RES/$1$SUFFIX.jsonl"
  log "=== $1 ($TRIALS_PEERS trials)"
  case "$1" in
    patroni-default) TRIALS=$TRIALS_PEERS LABEL=patroni-default-sync OUT="$out" TTL=30 LOOP_WAIT=10 RETRY_TIMEOUT=10 SYNC_MODE=true "$SHARED/run-patroni-trials.sh" ;;
    patroni-tuned)   TRIALS=$TRIALS_PEERS LABEL=patroni-tuned-sync OUT="$out" TTL=10 LOOP_WAIT=2 RETRY_TIMEOUT=3 SYNC_MODE=true "$SHARED/run-patroni-trials.sh" ;;
    patroni-default-async) TRIALS=$TRIALS_PEERS LABEL=patroni-default-async OUT="$out" TTL=30 LOOP_WAIT=10 RETRY_TIMEOUT=10 SYNC_MODE=false "$SHARED/run-patroni-trials.sh" ;;
    patroni-tuned-async)   TRIALS=$TRIALS_PEERS LABEL=patroni-tuned-async OUT="$out" TTL=10 LOOP_WAIT=2 RETRY_TIMEOUT=3 SYNC_MODE=false "$SHARED/run-patroni-trials.sh" ;;
    pgaf-tuned)
      HC_PERIOD_MS=1000 HC_TIMEOUT_MS=1000 HC_RETRIES=1 HC_RETRY_DELAY_MS=500 UNHEALTHY_TIMEOUT_MS=3000 \
      DEMOTE_TIMEOUT_MS=3000 TRIALS=$TRIALS_PEERS LABEL=pgaf-tuned OUT="$out" "$SHARED/run-pgaf-trials.sh" ;;
    patroni-switchover) TRIALS=$TRIALS_PEERS LABEL=patroni-default-sync OUT="$out" SYNC_MODE=true "$SHARED/run-patroni-switchover.sh" ;;
  esac 2>&1 | tee -a "$RES/logs/$1.log" | grep --line-buffered -E '=== |probe failed' >&2 || true
  [ -d "$BENCH_BASE/logs" ] && { mkdir -p "$RES/logs/$1"; mv "$BENCH_BASE"/logs/* "$RES/logs/$1/" 2>/dev/null || true; }
}

# ---- summary ------------------------------------------------------------------------------------
summary() {
  "$PY" - "$RES" "$(cat "$RES/command.txt")" >"$RES/summary.md" <<'EOF'
import glob, json, os, re, statistics, sys
res, cmds = sys.argv[1], sys.argv[2]
def runs(key):
    """(suffix, rows) for <key>.jsonl and its re-runs <key>-rerun*.jsonl"""
    out = []
    for p in sorted(glob.glob(os.path.join(res, key + "*.jsonl"))):
        m = re.fullmatch(re.escape(key) + r"(-rerun\d*)?\.jsonl", os.path.basename(p))
        if m: out.append((m.group(1) or "", [json.loads(l) for l in open(p) if l.strip()]))
    return out
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(xs, unit=" s", nd=2):
    xs = [x for x in xs if x is not None]
    if not xs: return "-"
    return f"{statistics.median(xs):.{nd}f}{unit} ({min(xs):.{nd}f}–{max(xs):.{nd}f})"
print("# Failover benchmark\n\nCommands (one line per invocation into this directory):\n")
print("```\n" + cmds.strip() + "\n```\n")
m = os.path.join(res, "machine.txt")
if os.path.exists(m): print("```\n" + open(m).read().strip() + "\n```\n")
kills = [("lb-sync", "Lifeboat, sync, defaults"), ("lb-async", "Lifeboat, async, defaults"),
         ("patroni-default", "Patroni 3.0.2 defaults (ttl 30, loop_wait 10, retry_timeout 10), synchronous_mode"),
         ("patroni-tuned", "Patroni 3.0.2 tuned (ttl 10, loop_wait 2, retry_timeout 3), synchronous_mode"),
         ("patroni-default-async", "Patroni 3.0.2 defaults, async"),
         ("patroni-tuned-async", "Patroni 3.0.2 tuned, async"),
         ("pgaf-tuned", "pg_auto_failover 2.0 tuned (hc 1 s/1 s, 1 retry 0.5 s, unhealthy/demote 3 s)")]
print("## SIGKILL of the primary under a 10 ms insert loop\n")
print("| configuration | trials (recovered) | RTO median (min–max) | write gap median | lost acked writes per trial | load1 at start median |")
print("|---|---|---|---|---|---|")
rto = {}
for key, name in kills:
    for suf, rs in runs(key):
        ok = [r for r in rs if r.get("recovered")]
        if not suf: rto[key] = med([r.get("rto_s") for r in ok])
        lost = [r.get("rpo_rows") for r in rs]
        print(f"| {name}{' ' + suf if suf else ''} | {len(rs)} ({len(ok)}) | {fmt([r.get('rto_s') for r in ok])} | {fmt([r.get('write_gap_s') for r in ok])} "
              f"| {sum(x or 0 for x in lost)} total ({','.join(str(x) for x in lost)}) | {fmt([r.get('load1_at_start') for r in rs], unit='')} |")
print()
for key in ("lb-async", "patroni-default-async", "patroni-tuned-async"):
    for suf, rs in runs(key):
        for r in rs:
            if r.get("rpo_rows"):
                last = (r.get("lost_ids") or [0])[-1] >= (r.get("acked_before_kill") or 0)
                print(f"* {key}{suf} {r.get('trial_tag', '')}: {r['rpo_rows']} acknowledged write(s) lost, ids {r.get('lost_ids')}, "
                      f"span {r.get('rpo_ms')} ms{'; the newest acknowledged write before the kill (acked < ~10 ms before it)' if last else ''}")
print()
lb = rto.get("lb-sync")
if lb:
    print("Ratios of RTO medians (Lifeboat sync / peer; < 1 = Lifeboat faster):\n")
    for key, name in kills[2:]:
        if rto.get(key): print(f"* / {name}: **{lb / rto[key]:.3f}** (= 1/{rto[key] / lb:.1f})")
    la = rto.get("lb-async")
    for key, name in kills[4:6]:
        if la and rto.get(key): print(f"* Lifeboat async / {name}: {la / rto[key]:.3f}")
    print()
    t = [f"RTO median ≤ 3 s: {'met' if lb <= 3 else 'MISSED'} ({lb:.2f} s)"]
    if rto.get("patroni-default"): t.append(f"≤ 1/5 of Patroni defaults: {'met' if lb <= rto['patroni-default'] / 5 else 'MISSED'}")
    if rto.get("patroni-tuned"): t.append(f"below Patroni tuned: {'met' if lb < rto['patroni-tuned'] else 'MISSED'}")
    if rto.get("pgaf-tuned"): t.append(f"below pg_auto_failover tuned: {'met' if lb < rto['pgaf-tuned'] else 'MISSED'}")
    rs = [r for _, x in runs("lb-sync") for r in x]
    t.append(f"0 lost in sync: {'met' if all(r.get('rpo_rows') == 0 for r in rs) else 'MISSED'} ({sum(r.get('rpo_rows') or 0 for r in rs)} over {len(rs)} trials)")
    print("Targets: " + "; ".join(t) + "\n")
for key in ("lb-sync", "lb-async"):
    rs = [r for _, x in runs(key) for r in x]
    steps = {}
    for r in rs:
        st = (r.get("lb_last_transition") or {}).get("steps") or []
        if not st: continue
        # at_seconds since schema_version 1; results recorded before it have at_ms
        ms = lambda s_: s_["at_ms"] if "at_ms" in s_ else s_.get("at_seconds", 0) * 1000
        t0 = ms(st[0])
        for s_ in st: steps.setdefault(re.sub(r"\b(m[12]|[0-9A-F]{6,})\b", "…", s_.get("what", "?"))[:70], []).append(ms(s_) - t0)
    if steps:
        print(f"{key}: the daemon's failover steps (last_transition, ms after 'decided'; median (min–max)):\n")
        for k, v in steps.items(): print(f"* +{statistics.median(v):.0f} ms ({min(v)}–{max(v)}, n={len(v)}): {k}")
        print()
print("## Transient faults and planned switchover\n")
print("| configuration | trials | failovers (writer saw the node change / daemon generation moved) | max write gap median (min–max) | failed statements median (max) | lost acked writes | load1 at start median |")
print("|---|---|---|---|---|---|---|")
for key, name, gen_ok in [("lb-blip", "Lifeboat sync, SIGSTOP primary (postmaster+backends) 0.5 s", 1),
                          ("lb-switchover", "Lifeboat sync, `lifeboat switchover`", 2),
                          ("patroni-switchover", "Patroni 3.0.2 defaults, synchronous_mode, `patronictl switchover --force`", None)]:
    for suf, rs in runs(key):
        ch = sum(1 for r in rs if r.get("failover_happened"))
        extra = ""
        if gen_ok is not None:
            g = sum(1 for r in rs if (r.get("lb_generation") or 0) > gen_ok)
            extra = f" / {g} beyond generation {gen_ok}"
        errs = [r.get("errors_after_start") or 0 for r in rs]
        print(f"| {name}{' ' + suf if suf else ''} | {len(rs)} | {ch}{extra} | {fmt([r.get('max_write_gap_s') for r in rs], nd=3)} "
              f"| {statistics.median(errs):.0f} ({max(errs)}) | {sum(r.get('rpo_rows') or 0 for r in rs)} | {fmt([r.get('load1_at_start') for r in rs], unit='')} |")
print()
for suf, rs in runs("lb-switchover"):
    print(f"lb-switchover{suf} per trial: " + "; ".join(
        f"{r.get('trial_tag','?').split('-')[-1]} gap {r.get('max_write_gap_s')} s at +{r.get('max_gap_started_at_s')} s, gen {r.get('lb_generation')}, load1 {r.get('load1_at_start')}"
        for r in rs) + "\n")
print("Raw results: " + ", ".join(sorted(os.path.basename(p) for p in glob.glob(os.path.join(res, '*.jsonl')))) + " in this directory; logs/ has the daemon logs (-v) and status per trial; load.tsv the machine's load.")
EOF
  # the shared summary too (cross-check; same JSON lines)
  { echo; echo "## Shared summarize.py"; echo; "$PY" "$SHARED/summarize.py" "$RES"/*.jsonl; } >>"$RES/summary.md" 2>/dev/null || true
  cat "$RES/summary.md"
}

for ph in $PHASES; do
  case "$ph" in
    lb-sync) lb_trials lb-sync sync kill ;;
    lb-async) lb_trials lb-async async kill ;;
    lb-blip) lb_trials lb-blip sync blip ;;
    lb-switchover) lb_trials lb-switchover sync switchover ;;
    patroni-default|patroni-tuned|patroni-default-async|patroni-tuned-async|pgaf-tuned|patroni-switchover) peer "$ph" ;;
    summary) summary ;;
    *) echo "unknown phase $ph" >&2; exit 2 ;;
  esac
done
log "done: $RES"
