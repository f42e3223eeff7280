#!/usr/bin/env bash
# PostgreSQL: Lifeboat vs pgBackRest on the same cluster, the same data, in the same run.
#
# Usage:  bash bench/postgres.sh            (as root; settings via environment variables)
#
# The pgBackRest side is measured with the shared reference scripts in
# ../shared/bench/pgbackrest (setup.sh, full_backup.sh, restore.sh, archive_latency.sh,
# wal_backlog.sh, pitr.sh; called, not copied). The Lifeboat side is measured here the same way
# (same timer: GNU time -v, same CSV files, same methods). Phases (PHASES, in this order):
#
#   setup    initdb + pgBackRest stanza + `pgbench -i -s $SCALE` (shared setup.sh) on port 55432,
#            unless $BENCH/data exists; autovacuum off (so vacuum never changes pages between
#            the two tools' backups; each backup run starts with an explicit VACUUM instead).
#   backup   per run: reload the pgbench data (RESET_DATA), pgBackRest full backups (defaults =
#            gz, 1 process; --process-max=2 with lz4; --process-max=2 with zstd level 1), then
#            a Lifeboat full backup into a fresh, empty repository ($BENCH/lb/full-rN). With
#            incr in PHASES, each run continues with:
#   incr     update a contiguous 5 % of pgbench_accounts (a key range, like a shop's recent
#            orders), then pgBackRest `--type=incr` (defaults) and a second `lifeboat pg backup`
#            into the same repository; then the same with a random 5 % (`aid % 20 = N`, touches
#            nearly every 8 KiB page). Without backup in PHASES, incr first takes fresh,
#            unmeasured base backups of both tools.
#   restore  per run: pgBackRest restore.sh of the run's default full set (defaults; and
#            --process-max=2), of its lz4 set (--process-max=2); `lifeboat pg restore
#            --immediate --backup <the run's full>` (restore only, no replay; timed alone).
#   drain    per run: WAL backlog catch-up (shared wal_backlog.sh: archive_command off, generate
#            DRAIN_NSEG segments, switch archiving back on, time pg_stat_archiver's drain), with
#            the archive_command set to pgBackRest (gz, sync), pgBackRest (lz4, async, 2
#            processes), Lifeboat (sync), Lifeboat (--async --spool, pusher pushes 2 at a time).
#            The first pgBackRest run also copies PUSH_N real segments to $BENCH/segs.
#   push     per run: one archive command per 16 MiB segment, PUSH_N calls with fresh names:
#            pgBackRest gz and lz4 (shared archive_latency.sh), Lifeboat (own loop below, into a
#            fresh repository per run, each segment once: no deduplication between calls), and
#            `runuser -u postgres -- true` (the runuser overhead inside every figure).
#   pitr     per run: fresh base backups of both tools, then >= PITR_WAL_MIB MiB of WAL from
#            pgbench (archived into both repositories by a chained archive_command), a target
#            LSN near its end; shared pitr.sh for pgBackRest (restore --type=lsn, start, wait for
#            promotion), the same steps for `lifeboat pg restore --to-lsn` (WAL prefetch on).
#   summary  bench/pg/summarize.py over the raw results -> $RES/summary.md
#
# Environment:
#   PHASES="setup backup incr restore drain push pitr summary"   any subset, in any order;
#                        every phase appends rows, and the summary takes the newest row of each
#                        label, so a failed phase can simply be rerun (incr needs the same run's
#                        backup phase; restore needs backup; push needs $BENCH/segs from drain)
#   RUNS=3               repetitions of each measured phase (medians of RUNS)
#   FIRST_RUN=1          number of the first run (labels -rN): FIRST_RUN=4 RUNS=3 adds runs 4-6
#                        to earlier ones (the summary takes every run of a label)
#   DRAIN_MODES="gz-sync lb-sync lz4-async lb-async"   which archivers the drain phase runs
#   SCALE=130            pgbench scale of the setup (130 -> ~1.95 GB database)
#   WORK=/work/bench-pg  work dir (build, binary); BENCH=$WORK/bench holds the cluster and the
#                        repositories (owned by postgres; ~60 GB free recommended)
#   LIFEBOAT_REV=HEAD    commit to build: a clean `git archive` into $WORK/src-<rev>, release
#                        build with CARGO_TARGET_DIR=/work/target-bench, binary copied to
#                        $WORK/bin (other engineers' edits and rebuilds cannot leak in)
#   LB=<path>            use this lifeboat binary instead of building (REV must then be given)
#   RES=bench/results/<UTC date>/pg-<rev>   raw results (CSV/TSV, GNU time -v files, logs)
#   DRAIN_NSEG=96 PUSH_N=24 PITR_WAL_MIB=1126
#   QUIET_BUSY=0.2 QUIET_TIMEOUT=1800   before each measurement wait until the whole machine
#                        used < QUIET_BUSY cores over 3 s (our own processes are idle then, so
#                        this is foreign load: other engineers' builds), at most QUIET_TIMEOUT s;
#                        the wait, load1 and the CPU the rest of the machine used during each
#                        measurement go to conditions.csv (a timed-out wait is marked noisy)
#   RESET_DATA=1         reload the pgbench data (pgbench -i) at the start of every backup run,
#                        so all runs measure the same state (0: keep the previous runs' updates)
#   INSTALL=1            apt-get install pgbackrest, time, bc, linux-perf if missing
#
# Output in $RES: timings.csv (every timed command: wall, user, sys, RSS), conditions.csv,
# repo-size.csv (pgBackRest sets), lb-backups.csv, archive-latency.csv (+ per-call TSVs),
# wal-drain.csv (+ drain traces), pitr.csv (+ PostgreSQL logs), restore-size.csv, load.tsv
# (machine load every 5 s, with the number of rustc/cc processes), machine.txt, summary.md.
set -euo pipefail

ROOT="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
SHARED="${SHARED:-$ROOT/../shared/bench/pgbackrest}"
[ -f "$SHARED/lib.sh" ] || { echo "pgBackRest scripts not found: $SHARED" >&2; exit 1; }
SHARED="$(cd "$SHARED" && pwd)"
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL runs as postgres via runuser)" >&2; exit 1; }

PHASES="${PHASES:-setup backup incr restore drain push pitr summary}"
RUNS="${RUNS:-3}"
FIRST_RUN="${FIRST_RUN:-1}"
DRAIN_MODES="${DRAIN_MODES:-gz-sync lb-sync lz4-async lb-async}"
export SCALE="${SCALE:-130}"
WORK="${WORK:-/work/bench-pg}"
export BENCH="${BENCH:-$WORK/bench}"
DRAIN_NSEG="${DRAIN_NSEG:-96}"
PUSH_N="${PUSH_N:-24}"
PITR_WAL_MIB="${PITR_WAL_MIB:-1126}"
QUIET_BUSY="${QUIET_BUSY:-0.2}"
QUIET_TIMEOUT="${QUIET_TIMEOUT:-1800}"
INSTALL="${INSTALL:-1}"
RESET_DATA="${RESET_DATA:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-bench}"
SRCNAME=bench                       # Lifeboat source name (= the pgBackRest stanza)
LB_PITR_PORT="${LB_PITR_PORT:-55434}"

# ---- tools --------------------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
  missing=()
  for p in pgbackrest:pgbackrest /usr/bin/time:time bc:bc perf:linux-perf; do
    command -v "${p%%:*}" >/dev/null 2>&1 || missing+=("${p#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update && apt-get install -y "${missing[@]}"
  fi
fi
[ -x /usr/lib/postgresql/15/bin/postgres ] || { echo "PostgreSQL 15 missing (apt-get install postgresql-15)" >&2; exit 1; }

# ---- lifeboat: clean export of LIFEBOAT_REV, release build, private copy of the binary ------
mkdir -p "$WORK/bin"; chmod 755 "$WORK" "$WORK/bin"
if [ -z "${LB:-}" ]; then
  REV="$(git -C "$ROOT" rev-parse --short "${LIFEBOAT_REV:-HEAD}")"
  SRC="$WORK/src-$REV"
  if [ ! -d "$SRC" ]; then
    rm -rf "$SRC.tmp"; mkdir -p "$SRC.tmp"
    git -C "$ROOT" archive "$REV" | tar -x -C "$SRC.tmp"
    mv "$SRC.tmp" "$SRC"
  fi
  LB="$WORK/bin/lifeboat-$REV"
  if [ ! -x "$LB" ]; then
    echo "building lifeboat $REV from $SRC (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$SRC" && cargo build --release -p lifeboat-cli)
    cp "$CARGO_TARGET_DIR/release/lifeboat" "$LB.tmp" && chmod 755 "$LB.tmp" && mv "$LB.tmp" "$LB"
  fi
fi
: "${REV:?with LB=<binary> also set REV}"
echo "lifeboat $REV: $LB ($(sha256sum "$LB" | cut -c1-16))"

export RES="${RES:-$ROOT/bench/results/$(date -u +%Y-%m-%d)/pg-$REV}"
mkdir -p "$RES"
# shellcheck source=/dev/null
source "$SHARED/lib.sh"          # asp, pgbr, sql, timed, duB, PGBIN, PGPORT, STANZA, CONF
PGBR_CONF_CLEAN="$BENCH/pgbackrest.conf.clean"
DSN="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
LOG="$RES/run.log"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
fail() { log "FAILED: $*"; echo "$(date -u +%FT%TZ),$*" >>"$RES/failures.csv"; }

# ---- machine and load ------------------------------------------------------------------------
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
TCK=$(getconf CLK_TCK)
load1() { cut -d' ' -f1 /proc/loadavg; }
busy_cores() {  # whole-machine CPU use over $1 seconds, in cores
  local a b; a=$(cpu_ticks); sleep "$1"; b=$(cpu_ticks)
  echo "scale=2; ($b - $a) / $TCK / $1" | bc -l
}
QUIET_WAITED=0 QUIET_OK=1
quiet() {  # wait until the machine is idle (foreign load gone), at most QUIET_TIMEOUT seconds
  local t0 b; t0=$(date +%s); QUIET_OK=1
  while :; do
    b=$(busy_cores 3)
    [ "$(echo "$b < $QUIET_BUSY" | bc -l)" = 1 ] && break
    if [ $(( $(date +%s) - t0 )) -ge "$QUIET_TIMEOUT" ]; then QUIET_OK=0; log "machine still busy ($b cores) after ${QUIET_TIMEOUT}s: measuring anyway, marked noisy"; break; fi
  done
  QUIET_WAITED=$(( $(date +%s) - t0 ))
  [ "$QUIET_WAITED" -lt 10 ] || log "waited ${QUIET_WAITED}s for a quiet machine (busy $b cores)"
}
# measure LABEL cmd...: quiet check, then run cmd; conditions.csv gets load1 before, the wait,
# the machine's CPU seconds while cmd ran (the summary subtracts the command's own user+sys,
# from timings.csv, to get other_cpu_s) and whether the quiet check passed.
measure() {
  local label=$1; shift
  quiet
  local l k0 k1 t0 t1 rc=0
  l=$(load1); k0=$(cpu_ticks); t0=$(date +%s.%N)
  "$@" || rc=$?
  t1=$(date +%s.%N); k1=$(cpu_ticks)
  [ -s "$RES/conditions.csv" ] || echo "label,load1_before,quiet_wait_s,quiet_ok,machine_cpu_s,span_s,rc" >"$RES/conditions.csv"
  echo "$label,$l,$QUIET_WAITED,$QUIET_OK,$(echo "scale=2; ($k1 - $k0) / $TCK" | bc -l),$(printf %.2f "$(echo "$t1 - $t0" | bc -l)"),$rc" >>"$RES/conditions.csv"
  [ "$rc" = 0 ] || fail "$label rc=$rc"
  return 0
}
# timed_to OUT LABEL EXTRA cmd...: like lib.sh's timed (same timings.csv row), stdout into OUT
timed_to() {
  local out=$1 label=$2 extra=$3; shift 3
  local f="$RES/time-$label.txt" rc=0
  /usr/bin/time -v -o "$f" "$@" >"$out" || rc=$?
  sed -i "s#$BENCH#\$BENCH#g" "$f"
  local wall user sys rss
  wall=$(awk -F': ' '/Elapsed \(wall/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$f")
  user=$(awk -F': ' '/User time/{print $2}' "$f"); sys=$(awk -F': ' '/System time/{print $2}' "$f")
  rss=$(awk -F': ' '/Maximum resident/{printf "%.1f", $2/1024}' "$f")
  [ -s "$RES/timings.csv" ] || echo "label,wall_s,user_s,sys_s,maxrss_mib,rc,extra" >"$RES/timings.csv"
  echo "$label,$wall,$user,$sys,$rss,$rc,$extra" | tee -a "$RES/timings.csv"
  return $rc
}

sampler() {  # load.tsv: every 5 s the load, the machine's busy cores and foreign compilers
  [ -s "$RES/load.tsv" ] || printf 'utc\tload1\tbusy_cores\trustc\tcc\tcargo\n' >"$RES/load.tsv"
  while :; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%T)" "$(load1)" "$(busy_cores 5)" \
      "$(pgrep -c -x rustc || true)" "$(pgrep -c -x 'cc1|cc1plus' || true)" "$(pgrep -c -x cargo || true)" >>"$RES/load.tsv"
  done
}
sampler & SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT

{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "command: PHASES='$PHASES' RUNS=$RUNS SCALE=$SCALE RESET_DATA=$RESET_DATA DRAIN_NSEG=$DRAIN_NSEG PUSH_N=$PUSH_N PITR_WAL_MIB=$PITR_WAL_MIB LIFEBOAT_REV=${LIFEBOAT_REV:-HEAD} bash bench/postgres.sh"
  echo "cpu: $(lscpu | awk -F': +' '/Model name/{print $2}') x $(nproc)"
  echo "ram: $(free -g | awk '/Mem:/{print $2}') GiB; kernel $(uname -r); $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "disk: $(df -h "$WORK" | awk 'NR==2{print $1, $2}') ($(findmnt -no FSTYPE -T "$WORK"))"
  echo "postgres: $("$PGBIN/postgres" --version)"
  echo "pgbackrest: $(pgbackrest version)"
  echo "lifeboat: $("$LB" --version) rev $REV sha256 $(sha256sum "$LB" | cut -c1-16)"
  echo "rustc: $(rustc --version 2>/dev/null || echo n/a)"
} >>"$RES/machine.txt"

# ---- the cluster and its archive_command ---------------------------------------------------
pg_up() { [ -f "$BENCH/data/postmaster.pid" ] && sql "select 1" >/dev/null 2>&1; }
ensure_up() { pg_up || asp "$PGBIN/pg_ctl" -D "$BENCH/data" -l "$BENCH/log/postgres.log" -w start >/dev/null; }
PUSH_PGBR="pgbackrest --config=$CONF --stanza=$STANZA archive-push %p"
push_lb() { echo "$LB -q pg wal-push --source $SRCNAME --repo $BENCH/lb-cur/repo --password-file $BENCH/lb-cur/key $* %p"; }
# set_archive pgbr|lb|lb-async|both: the postgresql.conf archive_command (wal_backlog.sh's
# ALTER SYSTEM RESET falls back to it). During a tool's measured backup only its own archiver
# runs, as in a real deployment: `lifeboat pg backup` calls pg_backup_stop(wait_for_archive
# => true), which would otherwise also wait for pgBackRest's push of the stop segment.
set_archive() {
  local cmd
  case "$1" in
    pgbr) cmd="$PUSH_PGBR" ;;
    lb) cmd="$(push_lb)" ;;
    lb-async) cmd="$(push_lb --async --spool "$BENCH/lb-spool")" ;;
    both) cmd="$PUSH_PGBR && $(push_lb)" ;;
    none) cmd="/bin/true" ;;   # only while reloading the data: no backup needs that WAL
    *) echo "set_archive: $1?" >&2; return 2 ;;
  esac
  wait_archived
  sed -i '/^archive_command *=/d' "$BENCH/data/postgresql.conf"
  echo "archive_command = '$cmd'" >>"$BENCH/data/postgresql.conf"
  sql "ALTER SYSTEM RESET archive_command" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
  sleep 1
  ARCHIVE_MODE=$1
}
wait_archived() {  # until no segment waits for the archiver (at most 900 s)
  local i
  for ((i = 0; i < 4500; i++)); do
    ls "$BENCH/data/pg_wal/archive_status/" | grep -q '\.ready$' || return 0
    sleep 0.2
  done
  fail "archiver still behind after 900 s ($(sql "select failed_count, last_failed_wal from pg_stat_archiver"))"
}
pgbr_conf_default() {  # back to pgBackRest's defaults (wal_backlog.sh leaves async/compress-type)
  cp "$PGBR_CONF_CLEAN" "$CONF"; chown postgres: "$CONF"
}
# lb_new_repo NAME: an empty Lifeboat repository $BENCH/lb/NAME/repo with a machine key
# $BENCH/lb/NAME/key; $BENCH/lb-cur points to it (the archive_command uses that link)
lb_new_repo() {
  local d="$BENCH/lb/$1"
  rm -rf "$d"; mkdir -p "$d"; chown postgres: "$BENCH/lb" "$d"; chmod 700 "$d"
  asp sh -c "umask 077; head -c 24 /dev/urandom | base64 > '$d/human-password'"
  asp "$LB" -q --no-progress --repo "$d/repo" --password-file "$d/human-password" init >/dev/null
  asp "$LB" -q --no-progress --repo "$d/repo" --password-file "$d/human-password" key add --generate "$d/key" >/dev/null
  ln -sfn "$d" "$BENCH/lb-cur"
}
lbpg() {  # lifeboat pg ... as postgres on the current repository
  local d; d=$(readlink -f "$BENCH/lb-cur")
  asp "$LB" --no-progress --repo "$d/repo" --password-file "$d/key" pg "$@"
}
repo_bytes_nowal() {  # a Lifeboat repository's size without its WAL objects (wal/)
  local all w=0; all=$(duB "$1"); [ -d "$1/wal" ] && w=$(duB "$1/wal"); echo $((all - w))
}

# lb_backup LABEL KIND: time `lifeboat pg backup` on the current repository; lb-backups.csv
# gets the snapshot, its bytes (read / added / stored per the JSON report) and the growth of the
# repository without WAL objects.
lb_backup() {
  local label=$1 kind=$2 d; d=$(readlink -f "$BENCH/lb-cur")
  sql "CHECKPOINT" >/dev/null
  local r0; r0=$(repo_bytes_nowal "$d/repo")
  measure "$label" timed_to "$RES/$label.json" "$label" "kind=$kind" "${ASP[@]}" "$LB" --no-progress --json \
    pg backup --source "$SRCNAME" --dsn "$DSN" --repo "$d/repo" --password-file "$d/key"
  local r1; r1=$(repo_bytes_nowal "$d/repo")
  [ -s "$RES/lb-backups.csv" ] || echo "label,kind,repo,snapshot,bytes,bytes_added,bytes_stored,repo_growth_nowal_bytes,repo_nowal_bytes,start_lsn,stop_lsn" >"$RES/lb-backups.csv"
  python3 - "$RES/$label.json" "$label" "$kind" "$(basename "$d")" "$((r1 - r0))" "$r1" <<'PY' | tee -a "$RES/lb-backups.csv"
import json, sys
f, label, kind, repo, growth, total = sys.argv[1:]
try:
    j = json.load(open(f))
except Exception:
    j = {}
s = j.get("summary", {}); p = j.get("postgres", {})
# JSON names of schema_version 1 (docs/json.md); the CSV keeps its columns for old results
print(",".join(str(x) for x in [label, kind, repo, j.get("snapshot_id", ""), s.get("bytes", ""),
      s.get("added_bytes", ""), s.get("stored_bytes", ""), growth, total, p.get("start_lsn", ""), p.get("stop_lsn", "")]))
PY
}
last_field() {  # last_field FILE LABEL COLUMN: that column of the newest row with that label
  python3 - "$@" <<'PY'
import csv, sys
f, label, col = sys.argv[1:]
rows = [r for r in csv.DictReader(open(f)) if r["label"] == label]
print(rows[-1][col] if rows else "")
PY
}
vacuum_checkpoint() { sql "VACUUM pgbench_accounts" >/dev/null; sql "CHECKPOINT" >/dev/null; }
# reset_data: a freshly loaded pgbench database, so that every backup run starts from the same
# state. Without it, each run's updates leave free space scattered over pgbench_accounts (after
# VACUUM), and the next run's "contiguous" update then puts its new row versions into pages all
# over the table (see BENCHMARKS.md). The load's ~2 GB of WAL is not archived (no backup needs it).
reset_data() {
  log "reloading pgbench data (scale $SCALE)"
  set_archive none
  asp pgbench -h "$BENCH/sock" -p "$PGPORT" -i -s "$SCALE" -q postgres >>"$RES/reset-data.log" 2>&1
  sql "DROP TABLE IF EXISTS walgen" >/dev/null
  sql "VACUUM ANALYZE" >/dev/null; sql "CHECKPOINT" >/dev/null; sql "select pg_switch_wal()" >/dev/null
  set_archive pgbr
}
NROWS() { echo $((SCALE * 100000)); }

# ---- phases ----------------------------------------------------------------------------------
phase_setup() {
  if [ -f "$BENCH/data/PG_VERSION" ]; then
    log "setup: $BENCH/data exists, reusing it"; ensure_up
  else
    log "setup: initdb + stanza + pgbench -i -s $SCALE"
    mkdir -p "$BENCH"; chown postgres: "$BENCH"; chmod 755 "$BENCH"
    bash "$SHARED/setup.sh"
  fi
  [ -f "$PGBR_CONF_CLEAN" ] || cp "$CONF" "$PGBR_CONF_CLEAN"
  pgbr_conf_default
  sql "ALTER SYSTEM SET autovacuum = off" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
  mkdir -p "$BENCH/lb"; chown postgres: "$BENCH/lb"
  [ -e "$BENCH/lb-cur" ] || lb_new_repo init
  set_archive pgbr
  sql "select pg_size_pretty(pg_database_size('postgres'))" | tee -a "$RES/dbsize.txt"
}

backup_run() {  # R: pgBackRest full backups (3 settings), then Lifeboat into an empty repository
  local r=$1
  log "backup run $r"
  ensure_up; pgbr_conf_default; set_archive pgbr
  if [ "$RESET_DATA" = 1 ]; then reset_data; fi
  vacuum_checkpoint
  echo "backup-r$r,$(sql "select pg_database_size('postgres')")" >>"$RES/dbsize.csv"
  sql "CHECKPOINT" >/dev/null
  measure "pgbr-full-p2-lz4-r$r" bash "$SHARED/full_backup.sh" "pgbr-full-p2-lz4-r$r" --process-max=2 --compress-type=lz4
  sql "CHECKPOINT" >/dev/null
  measure "pgbr-full-p2-zst1-r$r" bash "$SHARED/full_backup.sh" "pgbr-full-p2-zst1-r$r" --process-max=2 --compress-type=zst --compress-level=1
  sql "CHECKPOINT" >/dev/null
  measure "pgbr-full-default-r$r" bash "$SHARED/full_backup.sh" "pgbr-full-default-r$r"
  lb_new_repo "full-r$r"; set_archive lb; sql "select pg_switch_wal()" >/dev/null
  lb_backup "lb-full-r$r" full
  INCR_BASE=$r    # both tools' newest backups hold the same, unchanged data
}

# incr_run R: 5 % updates after a full backup of each tool on the same data. Directly after
# backup_run R the bases are the run's full backups; otherwise (PHASES=incr alone) fresh,
# unmeasured base backups are taken first. pgBackRest's --type=incr is relative to its newest
# backup (the default full, then the contiguous incremental); Lifeboat's second and third
# backups go into the full backup's repository.
incr_run() {
  local r=$1 n k x0 x1 base
  n=$(NROWS); k=$((n / 20))
  log "incr run $r"
  ensure_up; pgbr_conf_default
  if [ "${INCR_BASE:-}" = "$r" ]; then
    base="full-r$r"; ln -sfn "$BENCH/lb/$base" "$BENCH/lb-cur"
  else
    base="incr-base-r$r"; set_archive pgbr
    if [ "$RESET_DATA" = 1 ]; then reset_data; fi
    vacuum_checkpoint
    bash "$SHARED/full_backup.sh" "pgbr-incr-base-r$r" >/dev/null
    lb_new_repo "$base"; set_archive lb; sql "select pg_switch_wal()" >/dev/null
    lb_backup "lb-incr-base-r$r" full >/dev/null
  fi
  set_archive lb
  # contiguous 5 %: run 1 the newest keys, run 2 the 5 % below them, ...
  x1=$((n - (r - 1) * k)); x0=$((x1 - k + 1))
  log "update contiguous aid $x0..$x1"
  [ -s "$RES/updates.csv" ] || echo "label,where,db_bytes_after" >"$RES/updates.csv"
  echo "incr-contig-r$r,aid between $x0 and $x1,$(sql "update pgbench_accounts set abalance = abalance + 1 where aid between $x0 and $x1" ; sql "select pg_database_size('postgres')")" >>"$RES/updates.csv"
  sql "CHECKPOINT" >/dev/null; set_archive pgbr
  measure "pgbr-incr-contig-r$r" env TYPE=incr bash "$SHARED/full_backup.sh" "pgbr-incr-contig-r$r"
  set_archive lb; sql "select pg_switch_wal()" >/dev/null
  lb_backup "lb-incr-contig-r$r" incr-contig
  log "update random 5 % (aid % 20 = $r)"
  echo "incr-random-r$r,aid % 20 = $r,$(sql "update pgbench_accounts set abalance = abalance + 1 where aid % 20 = $r"; sql "select pg_database_size('postgres')")" >>"$RES/updates.csv"
  sql "CHECKPOINT" >/dev/null; set_archive pgbr
  measure "pgbr-incr-random-r$r" env TYPE=incr bash "$SHARED/full_backup.sh" "pgbr-incr-random-r$r"
  set_archive lb; sql "select pg_switch_wal()" >/dev/null
  lb_backup "lb-incr-random-r$r" incr-random
  echo "r$r,$base" >>"$RES/incr-bases.csv"
  INCR_BASE=
}

lb_restore() {  # LABEL REPO_DIR SNAPSHOT: restore only (--immediate), timed alone
  local label=$1 d=$2 snap=$3 T="$BENCH/restore-$1"
  rm -rf "$T"; mkdir -p "$T"; chown postgres: "$T"; chmod 700 "$T"
  sync
  timed_to "$RES/$label.out" "$label" "backup=$snap immediate" "${ASP[@]}" "$LB" --no-progress \
    --repo "$d/repo" --password-file "$d/key" pg restore --source "$SRCNAME" --target "$T" --immediate --backup "$snap"
  local rc=$?
  echo "$label,$(duB "$T")" >>"$RES/restore-size.csv"
  rm -rf "$T"
  return $rc
}
phase_restore() {
  local r set_d set_l snap
  for ((r = FIRST_RUN; r < FIRST_RUN + RUNS; r++)); do
    log "restore run $r"
    set_d=$(last_field "$RES/repo-size.csv" "pgbr-full-default-r$r" set)
    set_l=$(last_field "$RES/repo-size.csv" "pgbr-full-p2-lz4-r$r" set)
    snap=$(last_field "$RES/lb-backups.csv" "lb-full-r$r" snapshot)
    [ -n "$set_d" ] && [ -n "$snap" ] || { fail "restore r$r: backup rows missing (run PHASES=backup)"; continue; }
    measure "pgbr-restore-default-r$r" bash "$SHARED/restore.sh" "pgbr-restore-default-r$r" "$set_d"
    measure "pgbr-restore-p2-r$r" bash "$SHARED/restore.sh" "pgbr-restore-p2-r$r" "$set_d" --process-max=2
    measure "pgbr-restore-p2-lz4-r$r" bash "$SHARED/restore.sh" "pgbr-restore-p2-lz4-r$r" "$set_l" --process-max=2
    measure "lb-restore-r$r" lb_restore "lb-restore-r$r" "$BENCH/lb/full-r$r" "$snap"
  done
}

drain_one() {  # LABEL ARCHIVE_MODE MODE [COPY_N] [env...]: one wal_backlog.sh run, then tidy up
  local label=$1 am=$2 mode=$3 copy=${4:-0}; shift 4 || shift $#
  pgbr_conf_default
  case "$am" in lb*) lb_new_repo "$label" ;; esac
  set_archive "$am"
  measure "$label" env "$@" bash "$SHARED/wal_backlog.sh" "$label" "$mode" "$DRAIN_NSEG" "$copy"
  pgbr_conf_default
  sql "TRUNCATE walgen" >/dev/null; sql "CHECKPOINT" >/dev/null
  wait_archived
  if [ "$am" = lb-async ]; then  # the pusher exits after 10 s idle; keep its log
    sleep 11; cp "$BENCH/lb-spool/$SRCNAME/archive/pusher.log" "$RES/$label-pusher.log" 2>/dev/null || true
  fi
  case "$am" in lb*) rm -rf "$BENCH/lb/$label" ;; esac   # 1.5 GB of WAL each; not needed again
}
phase_drain() {
  local r copy m
  for ((r = FIRST_RUN; r < FIRST_RUN + RUNS; r++)); do
    log "drain run $r"
    ensure_up
    copy=0; [ "$(ls "$BENCH/segs" 2>/dev/null | wc -l)" -lt "$PUSH_N" ] && copy=$PUSH_N
    for m in $DRAIN_MODES; do
      case "$m" in
        gz-sync) drain_one "pgbr-drain-gz-sync-r$r" pgbr sync "$copy"; copy=0 ;;
        lb-sync) drain_one "lb-drain-sync-r$r" lb sync 0 ;;
        lz4-async) drain_one "pgbr-drain-lz4-async-r$r" pgbr async 0 COMPRESS=lz4 ASYNC_PM=2 ;;
        lb-async) drain_one "lb-drain-async-r$r" lb-async async 0 ;;
        *) echo "unknown drain mode $m" >&2; exit 2 ;;
      esac
    done
  done
  set_archive pgbr
}

# lb_push_latency LABEL N: like archive_latency.sh, for `lifeboat pg wal-push` (fresh repository,
# fresh names, every segment once); wall time with a ns clock, CPU and RSS from GNU time
lb_push_latency() {
  local label=$1 N=$2 i base name dst t0 t1 out="$RES/archive-latency-$1.tsv"
  local d="$BENCH/lb/$label" SEGS
  lb_new_repo "$label"
  mkdir -p "$BENCH/segs-push"; chown postgres: "$BENCH/segs-push"
  mapfile -t SEGS < <(ls "$BENCH/segs" | sort)
  [ "${#SEGS[@]}" -ge "$N" ] || echo "note: $N pushes of ${#SEGS[@]} segments: some content repeats" | tee -a "$LOG"
  base=$(( 0x$(date +%s | tail -c 5) ))
  : >"$out"
  for ((i = 0; i < N; i++)); do
    name=$(printf '00000001%08X%08X' $((0x90 + (base % 0x60))) "$i")
    dst="$BENCH/segs-push/$name"; cp "$BENCH/segs/${SEGS[$((i % ${#SEGS[@]}))]}" "$dst"; chown postgres: "$dst"; sync
    t0=$(date +%s%N)
    /usr/bin/time -f '%e\t%U\t%S\t%M' -a -o "$out.time" "${ASP[@]}" "$LB" -q pg wal-push --source "$SRCNAME" \
      --repo "$d/repo" --password-file "$d/key" "$dst" || echo "push failed: $name" | tee -a "$LOG"
    t1=$(date +%s%N)
    printf '%s\t%s\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", (b - a) / 1e9}')" "$(tail -1 "$out.time")" >>"$out"
    rm -f "$dst"
  done
  rm -f "$out.time"
  python3 - "$out" "$label" <<'PY' | tee -a "$RES/archive-latency.csv"
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l[0].isdigit()]
w = [float(r[0]) for r in rows]; c = [float(r[2]) + float(r[3]) for r in rows]; m = [int(r[4]) for r in rows]
print(f"{sys.argv[2]},n={len(w)},median_wall_s={st.median(w):.3f},min={min(w):.3f},max={max(w):.3f},median_cpu_s={st.median(c):.3f},max_rss_mib={max(m)/1024:.1f}")
PY
  rm -rf "$d"
}
runuser_overhead() {  # LABEL N: `runuser -u postgres -- true`, the fixed cost inside every push figure
  local label=$1 N=$2 i t0 t1 out="$RES/archive-latency-$1.tsv"; : >"$out"
  for ((i = 0; i < N; i++)); do
    t0=$(date +%s%N); "${ASP[@]}" true; t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f\n", (b - a) / 1e9}' >>"$out"
  done
  python3 - "$out" "$label" <<'PY' | tee -a "$RES/archive-latency.csv"
import sys, statistics as st
w = [float(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{sys.argv[2]},n={len(w)},median_wall_s={st.median(w):.4f},min={min(w):.4f},max={max(w):.4f},median_cpu_s=,max_rss_mib=")
PY
}
phase_push() {
  local r
  if [ "$(ls "$BENCH/segs" 2>/dev/null | wc -l)" -lt 1 ]; then
    log "push: no segments in $BENCH/segs; generating them (wal_backlog.sh COPY_N=$PUSH_N)"
    drain_one "segs-seed" pgbr sync "$PUSH_N"
  fi
  pgbr_conf_default
  for ((r = FIRST_RUN; r < FIRST_RUN + RUNS; r++)); do
    log "push run $r"
    # fresh names each invocation; drop earlier WAL from the latency repository so that a
    # name reused by chance cannot collide with different content
    rm -rf "$BENCH"/repo-lat/archive/"$STANZA"/*-*/0000*
    measure "pgbr-push-gz-r$r" bash "$SHARED/archive_latency.sh" "pgbr-push-gz-r$r" "$PUSH_N"
    rm -rf "$BENCH"/repo-lat/archive/"$STANZA"/*-*/0000*
    measure "pgbr-push-lz4-r$r" bash "$SHARED/archive_latency.sh" "pgbr-push-lz4-r$r" "$PUSH_N" --compress-type=lz4
    measure "lb-push-r$r" lb_push_latency "lb-push-r$r" "$PUSH_N"
    measure "runuser-true-r$r" runuser_overhead "runuser-true-r$r" "$PUSH_N"
  done
}

# lb_pitr LABEL TARGET_LSN: the Lifeboat counterpart of pitr.sh (same steps, same poll)
lb_pitr() {
  local label=$1 target=$2 d; d=$(readlink -f "$BENCH/lb-cur")
  local PP=$LB_PITR_PORT T="$BENCH/pitr-$1" S="$BENCH/sock-$1"
  rm -rf "$T" "$S"; mkdir -p "$T" "$S"; chown postgres: "$T" "$S"; chmod 700 "$T"
  sync
  timed_to "$RES/pitr-restore-$label.out" "pitr-restore-$label" "to-lsn=$target" "${ASP[@]}" "$LB" --no-progress \
    --repo "$d/repo" --password-file "$d/key" pg restore --source "$SRCNAME" --target "$T" --to-lsn "$target" \
    || { rm -rf "$T" "$S"; return 1; }
  printf "port = %s\nunix_socket_directories = '%s'\narchive_mode = off\n" "$PP" "$S" >>"$T/postgresql.auto.conf"
  local t0 now first="" r
  t0=$(date +%s.%N)
  asp "$PGBIN/pg_ctl" -D "$T" -l "$BENCH/pitr-$label.log" start >/dev/null || { echo "pg_ctl start failed"; return 1; }
  while :; do
    r=$(asp "$PGBIN/psql" -h "$S" -p "$PP" -d postgres -Atq -c "select pg_is_in_recovery()" 2>/dev/null || true)
    now=$(date +%s.%N)
    [ -n "$r" ] && [ -z "$first" ] && first=$(echo "$now - $t0" | bc)
    [ "$r" = f ] && break
    [ "$(echo "$now - $t0 > ${PITR_TIMEOUT:-600}" | bc)" = 1 ] && { echo timeout; break; }
    sleep 0.2
  done
  local done_s lsn chk
  done_s=$(echo "$now - $t0" | bc)
  lsn=$(asp "$PGBIN/psql" -h "$S" -p "$PP" -d postgres -Atq -c "select pg_current_wal_lsn()")
  chk=$(asp "$PGBIN/psql" -h "$S" -p "$PP" -d postgres -Atq -c "select sum(abalance) from pgbench_accounts")
  echo "$label,$chk" >>"$RES/pitr-check.csv"
  asp "$PGBIN/pg_ctl" -D "$T" -m fast stop >/dev/null
  sed "s#$BENCH#\$BENCH#g" "$BENCH/pitr-$label.log" >"$RES/pitr-$label-postgres.log"
  [ -s "$RES/pitr.csv" ] || echo "label,target,first_conn_s,promoted_s,lsn_after" >"$RES/pitr.csv"
  echo "$label,$target,$first,$done_s,$lsn" | tee -a "$RES/pitr.csv"
  grep -E 'redo starts|redo done|system usage|recovery stopping|selected new timeline|consistent recovery' "$RES/pitr-$label-postgres.log" | cut -c1-240
  rm -rf "$T" "$S"
}
phase_pitr() {
  local r gen target lb_start pgbr_set pgbr_start
  for ((r = FIRST_RUN; r < FIRST_RUN + RUNS; r++)); do
    log "pitr run $r"
    ensure_up; pgbr_conf_default
    lb_new_repo "pitr-r$r"; set_archive both; sql "select pg_switch_wal()" >/dev/null; wait_archived
    sql "CHECKPOINT" >/dev/null
    bash "$SHARED/full_backup.sh" "pitr-base-pgbr-r$r" >/dev/null
    lb_backup "pitr-base-lb-r$r" full >/dev/null
    # >= PITR_WAL_MIB of WAL from pgbench (TPC-B-like transactions: the updates of a shop),
    # counted from the earlier of the two backups' start
    pgbr_set=$(last_field "$RES/repo-size.csv" "pitr-base-pgbr-r$r" set)
    pgbr_start=$(sed -n 's/^backup-lsn-start="\(.*\)"$/\1/p' "$BENCH/repo/backup/$STANZA/$pgbr_set/backup.manifest")
    log "generating ${PITR_WAL_MIB} MiB of WAL from $pgbr_start (pgBackRest set $pgbr_set) with pgbench"
    local g0; g0=$(date +%s)
    while :; do
      asp pgbench -h "$BENCH/sock" -p "$PGPORT" -n -c 2 -j 2 -T 10 postgres >>"$RES/pitr-pgbench.log" 2>&1
      gen=$(sql "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$pgbr_start')")
      [ "${gen%.*}" -ge $((PITR_WAL_MIB * 1024 * 1024)) ] && break
    done
    target=$(sql "select pg_current_wal_lsn()")
    asp pgbench -h "$BENCH/sock" -p "$PGPORT" -n -c 2 -j 2 -t 50 postgres >>"$RES/pitr-pgbench.log" 2>&1
    sql "select pg_switch_wal()" >/dev/null
    log "target $target; waiting for both archivers"
    wait_archived
    lb_start=$(last_field "$RES/lb-backups.csv" "pitr-base-lb-r$r" start_lsn)
    [ -s "$RES/pitr-wal.csv" ] || echo "run,pgbr_set,pgbr_start_lsn,lb_start_lsn,target_lsn,pgbr_replay_mib,lb_replay_mib,gen_s" >"$RES/pitr-wal.csv"
    echo "r$r,$pgbr_set,$pgbr_start,$lb_start,$target,$(sql "select round(pg_wal_lsn_diff('$target','$pgbr_start')/1048576)"),$(sql "select round(pg_wal_lsn_diff('$target','$lb_start')/1048576)"),$(( $(date +%s) - g0 ))" | tee -a "$RES/pitr-wal.csv"
    measure "pitr-pgbr-r$r" bash "$SHARED/pitr.sh" "pgbr-r$r" "$target"
    measure "pitr-lb-r$r" lb_pitr "lb-r$r" "$target"
    rm -rf "$BENCH/lb/pitr-r$((r - 1))" 2>/dev/null || true
  done
  set_archive pgbr
}

phase_summary() {
  python3 "$ROOT/bench/pg/summarize.py" "$RES" | tee "$RES/summary.md"
}

log "phases: $PHASES; runs $RUNS; results in $RES"
has() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }
for ph in $PHASES; do
  case "$ph" in
    setup) phase_setup ;;
    backup)  # per run: the full backups, then (if PHASES has incr) the incremental ones
      for ((r = FIRST_RUN; r < FIRST_RUN + RUNS; r++)); do backup_run "$r"; if has incr; then incr_run "$r"; fi; done ;;
    incr) has backup || for ((r = FIRST_RUN; r < FIRST_RUN + RUNS; r++)); do incr_run "$r"; done ;;
    restore) phase_restore ;;
    drain) phase_drain ;;
    push) phase_push ;;
    pitr) phase_pitr ;;
    summary) phase_summary ;;
    *) echo "unknown phase $ph" >&2; exit 2 ;;
  esac
done
log "done"
