#!/usr/bin/env bash
# Where the time of `lifeboat pg wal-push` goes (the missed targets of bench/postgres.sh).
# perf with software cpu-clock sampling (this VM has no hardware counters), like bench/profile.sh.
#
# Usage:  LB=/work/bench-pg/bin/lifeboat-<rev> BENCH=/work/bench-pg/bench bash bench/pg/profile.sh
#   N=24      pushes profiled (real 16 MiB segments from $BENCH/segs, filled by postgres.sh drain)
#   OUT=/work/bench-pg/prof   perf data and reports
#
# Output: OUT/push.{perf.data,threads.txt,dso.txt,flat.txt,report.txt} (all N calls, as the
# postgres user, each a fresh process, fresh names, empty repository), OUT/push.strace.txt
# (one call with timestamps: process start, key, read, seal, write, fsync, rename) and
# OUT/push.time.txt (GNU time of one call), OUT/zstd.txt (zstd -1 of the same segment, for scale).
set -euo pipefail
: "${LB:?LB=<lifeboat binary>}"
BENCH="${BENCH:-/work/bench-pg/bench}"
N="${N:-24}"
OUT="${OUT:-/work/bench-pg/prof}"
command -v perf >/dev/null && command -v strace >/dev/null || apt-get install -y linux-perf strace
mkdir -p "$OUT"; chmod 755 "$OUT"
P="$OUT/push-repo"
rm -rf "$P" "$OUT/segs-push"; mkdir -p "$P" "$OUT/segs-push"; chown postgres: "$P" "$OUT/segs-push"
asp() { runuser -u postgres -- "$@"; }
asp sh -c "umask 077; head -c 24 /dev/urandom | base64 > '$P/pw'"
asp "$LB" -q --repo "$P/repo" --password-file "$P/pw" init
asp "$LB" -q --repo "$P/repo" --password-file "$P/pw" key add --generate "$P/key"
mapfile -t SEGS < <(ls "$BENCH/segs" | sort)
for ((i = 0; i < N + 2; i++)); do
  name=$(printf '00000001000000A0%08X' "$i")
  cp "$BENCH/segs/${SEGS[$((i % ${#SEGS[@]}))]}" "$OUT/segs-push/$name"
done
chown -R postgres: "$OUT/segs-push"; sync
push() { asp "$LB" -q pg wal-push --source prof --repo "$P/repo" --password-file "$P/key" "$OUT/segs-push/$1"; }
export -f push asp; export LB P OUT

# 1. one call under strace (timeline), one under GNU time
strace -f -tt -T -o "$OUT/push.strace.txt" runuser -u postgres -- "$LB" -q pg wal-push --source prof --repo "$P/repo" \
  --password-file "$P/key" "$OUT/segs-push/$(printf '00000001000000A0%08X' "$N")"
/usr/bin/time -v -o "$OUT/push.time.txt" runuser -u postgres -- "$LB" -q pg wal-push --source prof \
  --repo "$P/repo" --password-file "$P/key" "$OUT/segs-push/$(printf '00000001000000A0%08X' $((N + 1)))"

# 2. N calls under perf (children followed)
perf record -q -e cpu-clock -F 2999 --call-graph dwarf,16384 -o "$OUT/push.perf.data" -- \
  bash -c 'for ((i = 0; i < '"$N"'; i++)); do push "$(printf "00000001000000A0%08X" "$i")"; done'
perf report -i "$OUT/push.perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/push.threads.txt" || true
perf report -i "$OUT/push.perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/push.dso.txt" || true
perf report -i "$OUT/push.perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/push.flat.txt" || true
perf report -i "$OUT/push.perf.data" --no-children --sort comm,sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/push.comm-sym.txt" || true
perf report -i "$OUT/push.perf.data" --children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/push.children.txt" || true

# 3. for scale: zstd -1 (one thread) of the same 16 MiB
f="$OUT/segs-push/$(printf '00000001000000A0%08X' 0)"
{ echo "zstd -1 -T1 of one segment: $( { /usr/bin/time -f '%e s wall %U user' zstd -1 -T1 -q -c "$f" >/dev/null; } 2>&1 )";
  echo "zstd -1 ratio: $(zstd -1 -T1 -q -c "$f" | wc -c) / $(stat -c %s "$f")"; } >"$OUT/zstd.txt"

echo "=== threads (share of all samples, $N calls)"; sed -n 1,12p "$OUT/push.threads.txt"
echo "=== dso"; sed -n 1,10p "$OUT/push.dso.txt"
echo "=== top symbols (self)"; sed -n 1,30p "$OUT/push.flat.txt"
echo "=== one call (GNU time)"; grep -E 'Elapsed|User time|System time|Percent|Maximum resident|context' "$OUT/push.time.txt"
cat "$OUT/zstd.txt"
rm -rf "$OUT/segs-push" "$P"
