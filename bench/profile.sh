#!/usr/bin/env bash
# CPU profile of lifeboat's phases with perf (software cpu-clock sampling: this VM has no
# hardware counters, `perf stat -e instructions` says <not supported>, but cpu-clock works).
#
# Usage:  bash bench/profile.sh        after bench/backup.sh built WORK/bin/lifeboat
#   WORK=/work/bench-work  PSCALE=0.2 (dataset of the profile, in WORK/prof/base)
#   PHASES="backup_initial backup_incr restore check_full snapshots"
#
# Output: WORK/prof/<phase>.{perf.data,report.txt,threads.txt,time.txt}; prints the top
# symbols (self time) and the per-thread split of every phase.
set -euo pipefail
ROOT="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
GEN="$ROOT/../shared/bench/gen_dataset.py"
WORK="${WORK:-/work/bench-work}"
PSCALE="${PSCALE:-0.2}"
PHASES="${PHASES:-backup_initial backup_incr restore check_full snapshots}"
LB="${LB:-$WORK/bin/lifeboat}"
P="$WORK/prof"
mkdir -p "$P"
[ -d "$P/base" ] || python3 "$GEN" generate --out "$P/base" --scale "$PSCALE" --seed 42 >"$P/base.fingerprint"
export LIFEBOAT_PASSWORD=bench LIFEBOAT_REPOSITORY="$P/repo"
rm -rf "$P/data" "$P/repo" "$P/restore"
cp -a "$P/base" "$P/data"
"$LB" --no-progress init >/dev/null

prof() {  # PHASE CMD...
  local ph="$1"; shift
  /usr/bin/time -v -o "$P/$ph.time.txt" \
    perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$P/$ph.perf.data" -- "$@" >/dev/null 2>"$P/$ph.stderr" || {
      echo "FAILED $ph"; cat "$P/$ph.stderr"; return 1; }
  perf report -i "$P/$ph.perf.data" --no-children --sort sym --stdio 2>/dev/null \
    | grep -v '^$' >"$P/$ph.report.txt" || true
  perf report -i "$P/$ph.perf.data" --no-children --sort comm --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' >"$P/$ph.threads.txt" || true
  perf report -i "$P/$ph.perf.data" --no-children --sort dso --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' >"$P/$ph.dso.txt" || true
  echo "=== $ph: $(grep -E 'Elapsed|Percent of CPU' "$P/$ph.time.txt" | sed 's/^\s*//' | tr '\n' ' ')"
  perf report -i "$P/$ph.perf.data" --no-children --sort sym --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' >"$P/$ph.flat.txt" || true
  echo "--- threads"; sed -n 1,10p "$P/$ph.threads.txt"
  echo "--- top symbols (self)"; sed -n 1,25p "$P/$ph.flat.txt"
}

for ph in $PHASES; do
  case "$ph" in
    backup_initial) prof "$ph" "$LB" --no-progress backup "$P/data" ;;
    backup_incr)
      python3 "$GEN" mutate --out "$P/data" --round 1 --seed 42 >/dev/null
      prof "$ph" "$LB" --no-progress backup "$P/data" ;;
    restore) rm -rf "$P/restore"; mkdir -p "$P/restore"; prof "$ph" "$LB" --no-progress restore latest --target "$P/restore" ;;
    check_full) prof "$ph" "$LB" --no-progress check --read-data ;;
    snapshots) prof "$ph" "$LB" --no-progress snapshots ;;
  esac
done
