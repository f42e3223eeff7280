#!/usr/bin/env bash
# The Lifeboat proxy against HAProxy in TCP mode, in front of the same PostgreSQL, in one run.
#
# Usage:  bash bench/proxy.sh           (as root; settings via environment variables)
#
# Starts a PostgreSQL 15 (as postgres, /usr/lib/postgresql/15/bin, temp data dir, free port,
# `pgbench -i -s $SCALE`), HAProxy 2.6 with the shared reference config
# (../shared/bench/haproxy/haproxy.cfg.tmpl: mode tcp, connect 5 s, client/server 30 m, default
# nbthread; substituted here as the shared bench.sh does, and run in the foreground so its PID
# is ours) and the Lifeboat proxy (release build of crates/traffic/examples/proxy.rs, copied
# to the temp dir so rebuilds by others cannot swap it). Then, RUNS times, interleaved (the
# order rotates each run: direct haproxy lifeboat / haproxy lifeboat direct / ...):
#   pgbench -S    -c 8 -j 2 -T $T -n     (persistent connections: the proxy's per-message cost)
#   pgbench -S -C -c 8 -j 2 -T $T -n     (a new connection per transaction: per-connection cost)
# against each of direct / haproxy / lifeboat, and prints medians of TPS and latency, the
# proxies' own CPU per transaction (from /proc/PID/stat, all threads) and the ratios
# lifeboat/haproxy and each/direct.
#
# Environment:
#   RUNS=3 T=15 SCALE=10
#   LB_ARGS=             arguments for the example beyond --listen/--primary; default none: one
#                        current-thread worker per CPU on SO_REUSEPORT listeners (ADR 0020);
#                        "--threads 1" = one current-thread runtime, "--threads 2" = multi-thread
#   LB_EXTRA=            arguments of a second Lifeboat proxy measured beside the first as mode
#                        "lifeboat-x" (e.g. LB_EXTRA="--threads 1": runtimes compared in one run)
#   LB_BIN=<path>        use this proxy binary instead of building (then say which in LABEL)
#   LABEL=               appended to the results dir name (proxy-<rev>[-LABEL])
#   QUIET_BUSY=0.3 QUIET_TIMEOUT=60   before each measurement wait until the machine used
#                        < QUIET_BUSY cores over 2 s (foreign load: other engineers' builds),
#                        at most QUIET_TIMEOUT s; the wait and the CPU the machine used during
#                        the measurement go into the rows
#   RES=bench/results/<UTC date>/proxy-<git short rev>[-LABEL]
#
# Output in $RES: pgbench.csv (one row per pgbench run), pgbench-<mode>-<conn>-r<N>.txt (raw
# output), machine.txt, haproxy.cfg, proxy.log (the example's counters at exit), summary.md.
set -euo pipefail

ROOT="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
SHARED="${SHARED:-$ROOT/../shared/bench/haproxy}"
[ -f "$SHARED/haproxy.cfg.tmpl" ] || { echo "HAProxy reference config not found: $SHARED" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL runs as postgres via runuser)" >&2; exit 1; }
PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/postgres" ] || { echo "PostgreSQL 15 missing (apt-get install postgresql-15)" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "haproxy missing (apt-get install haproxy)" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "pgbench missing (apt-get install postgresql-client-15)" >&2; exit 1; }

RUNS="${RUNS:-3}"; T="${T:-15}"; SCALE="${SCALE:-10}"
LB_ARGS="${LB_ARGS:-}"
QUIET_BUSY="${QUIET_BUSY:-0.3}"; QUIET_TIMEOUT="${QUIET_TIMEOUT:-60}"
REV="$(git -C "$ROOT" rev-parse --short HEAD)"
DIRTY=""; git -C "$ROOT" diff --quiet HEAD -- crates/traffic || DIRTY=" (crates/traffic has uncommitted changes)"
RES="${RES:-$ROOT/bench/results/$(date -u +%Y-%m-%d)/proxy-$REV${LABEL:+-$LABEL}}"
mkdir -p "$RES"
LOG="$RES/run.log"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# ---- processes we start, stopped by PID at exit ----------------------------------------------
WORK="$(mktemp -d /tmp/lifeboat-proxy-bench.XXXXXX)"
chmod 755 "$WORK"
HPID="" LPID="" XPID="" PGPID=""
cleanup() {
  local p
  for p in $LPID $XPID $HPID; do kill "$p" 2>/dev/null || true; done
  for p in $LPID $XPID $HPID; do wait "$p" 2>/dev/null || true; done
  if [ -n "$PGPID" ] && kill -0 "$PGPID" 2>/dev/null; then
    kill -INT "$PGPID" 2>/dev/null || true       # fast shutdown
    for _ in $(seq 100); do kill -0 "$PGPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PGPID" 2>/dev/null || true
  fi
  [ -f "$WORK/proxy.log" ] && cp "$WORK/proxy.log" "$RES/proxy.log"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {  # PORT: until something accepts on 127.0.0.1:PORT (10 s)
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listens on port $1" >&2; return 1
}
asp() { runuser -u postgres -- "$@"; }

# ---- the Lifeboat proxy: release build of the example --------------------------------------
if [ -z "${LB_BIN:-}" ]; then
  log "building the proxy example (release)"
  (cd "$ROOT" && cargo build --release -q -p lifeboat-traffic --example proxy)
  LB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/proxy"
fi
cp "$LB_BIN" "$WORK/proxy"

# ---- PostgreSQL ------------------------------------------------------------------------------
PG_PORT=$(free_port); HA_PORT=$(free_port); LB_PORT=$(free_port); LX_PORT=$(free_port)
mkdir -p "$WORK/sock"; chown -R postgres: "$WORK"
asp "$PGBIN/initdb" -U postgres --auth=trust -D "$WORK/data" >"$WORK/initdb.log"
cat >>"$WORK/data/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/sock'
max_connections = 100
shared_buffers = 256MB
logging_collector = off
EOF
asp "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w start >/dev/null
PGPID=$(head -1 "$WORK/data/postmaster.pid")
log "postgres $PGPID on port $PG_PORT; pgbench -i -s $SCALE"
asp pgbench -h 127.0.0.1 -p "$PG_PORT" -i -s "$SCALE" -q postgres >"$WORK/pgbench-init.log" 2>&1

# ---- HAProxy (the shared reference config) and Lifeboat -------------------------------------
sed -e "s#@RUNDIR@#$WORK#g" -e "s#@PROXY_PORT@#$HA_PORT#g" -e "s#@PG_PORT@#$PG_PORT#g" \
  "$SHARED/haproxy.cfg.tmpl" >"$WORK/haproxy.cfg"
cp "$WORK/haproxy.cfg" "$RES/haproxy.cfg"
haproxy -c -q -f "$WORK/haproxy.cfg"
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HPID=$!
# shellcheck disable=SC2086
"$WORK/proxy" --listen "127.0.0.1:$LB_PORT" --primary "127.0.0.1:$PG_PORT" $LB_ARGS \
  >"$WORK/proxy.log" 2>&1 &
LPID=$!
wait_port "$HA_PORT"; wait_port "$LB_PORT"
MODES=(direct haproxy lifeboat)
if [ -n "${LB_EXTRA:-}" ]; then
  # shellcheck disable=SC2086
  "$WORK/proxy" --listen "127.0.0.1:$LX_PORT" --primary "127.0.0.1:$PG_PORT" $LB_EXTRA >"$WORK/proxy-x.log" 2>&1 &
  XPID=$!
  wait_port "$LX_PORT"
  MODES+=(lifeboat-x)
  log "lifeboat-x $XPID on $LX_PORT ($LB_EXTRA)"
fi
log "haproxy $HPID on $HA_PORT ($(grep -c '^processor' /proc/cpuinfo) cpus, default nbthread: $(ls /proc/$HPID/task | wc -l) threads), lifeboat $LPID on $LB_PORT (${LB_ARGS:-default: a worker per CPU})"

{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "command: RUNS=$RUNS T=$T SCALE=$SCALE LB_ARGS='$LB_ARGS' LB_EXTRA='${LB_EXTRA:-}' bash bench/proxy.sh"
  echo "rev: $REV$DIRTY; proxy sha256 $(sha256sum "$WORK/proxy" | cut -c1-16)"
  echo "cpu: $(lscpu | awk -F': +' '/Model name/{print $2}') x $(nproc)"
  echo "ram: $(free -g | awk '/Mem:/{print $2}') GiB; kernel $(uname -r); $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "postgres: $("$PGBIN/postgres" --version); pgbench: $(pgbench --version)"
  echo "haproxy: $(haproxy -v | head -1)"
  echo "rustc: $(rustc --version 2>/dev/null || echo n/a)"
} >"$RES/machine.txt"

# ---- load -----------------------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
proc_ticks() { [ -z "$1" ] && { echo 0; return; }; awk '{print $14+$15}' "/proc/$1/stat"; }
busy_cores() { local a b; a=$(cpu_ticks); sleep "$1"; b=$(cpu_ticks); echo "scale=2; ($b - $a) / $TCK / $1" | bc -l; }
QUIET_WAITED=0
quiet() {
  local t0 b; t0=$(date +%s)
  while :; do
    b=$(busy_cores 2)
    [ "$(echo "$b < $QUIET_BUSY" | bc -l)" = 1 ] && break
    if [ $(( $(date +%s) - t0 )) -ge "$QUIET_TIMEOUT" ]; then log "machine still busy ($b cores) after ${QUIET_TIMEOUT}s: measuring anyway"; break; fi
  done
  QUIET_WAITED=$(( $(date +%s) - t0 ))
}

# ---- measurements ---------------------------------------------------------------------------
CSV="$RES/pgbench.csv"
[ -s "$CSV" ] || echo "mode,conn,run,tps,lat_ms,conn_ms,txns,failed,proxy_cpu_s,proxy_cpu_us_per_txn,machine_cpu_s,span_s,quiet_wait_s,load1,foreign_rustc" >"$CSV"
bench_one() {  # MODE CONN RUN
  local mode=$1 conn=$2 r=$3 port pid c="" out k0 k1 p0 p1 t0 t1
  case "$mode" in
    direct) port=$PG_PORT pid="" ;;
    haproxy) port=$HA_PORT pid=$HPID ;;
    lifeboat) port=$LB_PORT pid=$LPID ;;
    lifeboat-x) port=$LX_PORT pid=$XPID ;;
  esac
  [ "$conn" = new ] && c=-C
  out="$RES/pgbench-$mode-$conn-r$r.txt"
  quiet
  local l rustc; l=$(cut -d' ' -f1 /proc/loadavg); rustc=$(pgrep -c -x rustc || true)
  k0=$(cpu_ticks); p0=$(proc_ticks "$pid"); t0=$(date +%s.%N)
  asp pgbench -h 127.0.0.1 -p "$port" -S $c -c 8 -j 2 -T "$T" -n postgres >"$out" 2>&1 || log "pgbench $mode $conn r$r failed"
  t1=$(date +%s.%N); k1=$(cpu_ticks); p1=$(proc_ticks "$pid")
  local tps lat cms n failed pcpu
  tps=$(awk '/^tps = /{print $3; exit}' "$out")
  lat=$(awk '/latency average/{print $4}' "$out")
  cms=$(awk '/average connection time/{print $5}' "$out")
  n=$(awk '/number of transactions actually processed/{print $NF}' "$out" | cut -d/ -f1)
  failed=$(awk '/number of failed transactions/{print $5}' "$out")
  pcpu=$(echo "scale=3; ($p1 - $p0) / $TCK" | bc -l)
  echo "$mode,$conn,$r,$tps,$lat,${cms:-},$n,${failed:-0},$pcpu,$(echo "scale=2; $pcpu * 1000000 / ${n:-1}" | bc -l),$(echo "scale=2; ($k1 - $k0) / $TCK" | bc -l),$(printf %.2f "$(echo "$t1 - $t0" | bc -l)"),$QUIET_WAITED,$l,$rustc" \
    | tee -a "$CSV"
}

log "runs: $RUNS x {persistent, new} x {${MODES[*]}}, pgbench -S -c 8 -j 2 -T $T -n; results in $RES"
NM=${#MODES[@]}
for conn in persistent new; do
  for ((r = 1; r <= RUNS; r++)); do
    for ((i = 0; i < NM; i++)); do
      bench_one "${MODES[$(( (i + r - 1) % NM ))]}" "$conn" "$r"
    done
  done
done

# ---- summary --------------------------------------------------------------------------------
for p in $LPID $XPID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; LPID="" XPID=""
cp "$WORK/proxy.log" "$RES/proxy.log"; [ -z "${LB_EXTRA:-}" ] || cp "$WORK/proxy-x.log" "$RES/proxy-x.log"
python3 - "$CSV" "$RES" "$QUIET_TIMEOUT" <<'PY' | tee "$RES/summary.md"
import csv, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1])))
def med(mode, conn, key):
    v = [float(r[key]) for r in rows if r["mode"] == mode and r["conn"] == conn and r[key] not in ("", None)]
    return (st.median(v), min(v), max(v), len(v)) if v else None
print(f"# Proxy benchmark ({sys.argv[2].rstrip('/').split('/')[-1]})\n")
print("pgbench -S -c 8 -j 2 -n; medians of the runs (min-max); proxy CPU = the proxy process's user+sys per transaction\n")
print("| connections | mode | TPS | latency ms | conn ms | proxy CPU µs/txn | TPS / direct | machine CPU s |")
print("|---|---|---|---|---|---|---|---|")
for conn in ("persistent", "new"):
    d = med("direct", conn, "tps")
    for mode in ("direct", "haproxy", "lifeboat", "lifeboat-x"):
        t = med(mode, conn, "tps")
        if not t:
            continue
        lat = med(mode, conn, "lat_ms"); cm = med(mode, conn, "conn_ms")
        cpu = med(mode, conn, "proxy_cpu_us_per_txn"); mc = med(mode, conn, "machine_cpu_s")
        cms = f"{cm[0]:.3f}" if cm else "-"
        cpus = f"{cpu[0]:.1f}" if cpu and mode != "direct" else "-"
        print(f"| {conn} | {mode} | {t[0]:.0f} ({t[1]:.0f}-{t[2]:.0f}) | {lat[0]:.3f} | {cms} | {cpus} | {t[0] / d[0]:.2f} | {mc[0]:.1f} |")
print()
for conn in ("persistent", "new"):
    for lb in ("lifeboat", "lifeboat-x"):
        h = med("haproxy", conn, "tps"); l = med(lb, conn, "tps")
        hc = med("haproxy", conn, "proxy_cpu_us_per_txn"); lc = med(lb, conn, "proxy_cpu_us_per_txn")
        if h and l:
            print(f"- {conn}: {lb}/haproxy TPS {l[0] / h[0]:.3f}; proxy CPU per transaction {lb}/haproxy "
                  f"{lc[0] / hc[0]:.2f} ({lc[0]:.1f} vs {hc[0]:.1f} µs)")
noisy = [r for r in rows if float(r["quiet_wait_s"]) >= float(sys.argv[3]) or int(r["foreign_rustc"] or 0) > 0]
print(f"- runs started while foreign compilers ran or after a quiet-wait timeout: {len(noisy)} of {len(rows)}")
PY
log "done"
