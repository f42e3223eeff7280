#!/usr/bin/env bash
# A/B of `lifeboat restore` between builds: the same snapshot restored by each binary in
# turn, RUNS rounds, into a journaled ext4 file system on a loop device (the machine's `/`
# is ext4 without a journal, where restores right after deletions measure ext4's
# recently-deleted inode scan, not the restore; see BENCHMARKS.md).
#
# Usage:  bash bench/restore_ab.sh BIN_A BIN_B [...]        (needs root for the loop mount)
#   REPO=/path/to/repo   repository to restore from (required; LIFEBOAT_PASSWORD set)
#   RUNS=4               rounds
#   FS=/work/bench-work/restore-ab.img   loop image (6 GiB, made once), mounted at FS.mnt
# Output: one line per restore: binary, round, wall s, user s, sys s, CPU %; then medians.
set -euo pipefail
: "${REPO:?set REPO to a repository with a snapshot}"
RUNS="${RUNS:-4}"
FS="${FS:-/work/bench-work/restore-ab.img}"
M="$FS.mnt"
if ! mountpoint -q "$M"; then
  [ -f "$FS" ] || { truncate -s 6G "$FS"; mkfs.ext4 -q -F "$FS"; }
  mkdir -p "$M"; mount -o loop "$FS" "$M"
fi
export LIFEBOAT_REPOSITORY="$REPO"
out=$(mktemp)
for run in $(seq 1 "$RUNS"); do
  for b in "$@"; do
    rm -rf "$M/restore"; sync; mkdir -p "$M/restore"
    /usr/bin/time -f "%e %U %S %P" -o "$out.t" "$b" --no-progress restore latest --target "$M/restore" >/dev/null
    echo "$b $run $(cat "$out.t")" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    b, _, wall, *_ = line.split()
    rows[b].append(float(wall))
for b, w in rows.items():
    print(f"{b}: median {statistics.median(w):.2f} s ({min(w):.2f}-{max(w):.2f}), {len(w)} runs")
PY
rm -f "$out" "$out.t"
rm -rf "$M/restore"
