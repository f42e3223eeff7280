#!/usr/bin/env bash
# Lifeboat vs restic vs borg, on the shared harness (../shared/bench/bench.sh).
#
# Usage:  bash bench/backup.sh           (settings via environment variables)
#
#   SCALE=1 RUNS=3       dataset scale and repetitions (medians of RUNS; the issue wants >= 3)
#   WORK=/work/bench-work   reusable work dir (outside the repo); WORK/base holds the dataset,
#                        generated once and shared by both variants through a symlink
#   TMPFS_DIR=/dev/shm/lifeboat-bench   repo + restore target of the tmpfs variant
#   TMPFS_RUNS=$RUNS     repetitions of the tmpfs variant
#   VARIANTS="disk tmpfs"   which harness runs to do
#   SNAPSHOTS=1          measure `lifeboat snapshots` on a 100-snapshot repository
#   SNAP_N=100           number of snapshots for that measurement
#   SNAP_RESTIC=1        also time `restic snapshots` on a 100-snapshot repository (reference)
#   FRESH=1              move earlier results of WORK/<variant>/results aside first
#   CARGO_TARGET_DIR=/work/target-bench   where lifeboat is built (release)
#   LIFEBOAT_REV=<commit>  build that commit (clean `git archive` into WORK/src-<rev>) instead
#                        of the working tree
#   INSTALL=1            apt-get install restic borgbackup time b3sum zstd lz4 hyperfine if missing
#
# Output: WORK/disk/results/{raw,sizes}.tsv, WORK/tmpfs/results/{raw,sizes}.tsv,
# WORK/snapshots/snapshots.tsv and WORK/summary.md (bench/summarize.py: medians, ratios,
# targets met/missed).
set -euo pipefail

ROOT="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
BENCH="$ROOT/../shared/bench/bench.sh"
[ -f "$BENCH" ] || { echo "harness not found: $BENCH" >&2; exit 1; }
GEN="$(dirname "$BENCH")/gen_dataset.py"

export SCALE="${SCALE:-1}" SEED="${SEED:-42}"
RUNS="${RUNS:-3}"
TMPFS_RUNS="${TMPFS_RUNS:-$RUNS}"
WORK="${WORK:-/work/bench-work}"
TMPFS_DIR="${TMPFS_DIR:-/dev/shm/lifeboat-bench}"
VARIANTS="${VARIANTS:-disk tmpfs}"
SNAPSHOTS="${SNAPSHOTS:-1}"
SNAP_N="${SNAP_N:-100}"
SNAP_RESTIC="${SNAP_RESTIC:-1}"
FRESH="${FRESH:-1}"
INSTALL="${INSTALL:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-bench}"

# ---- tools --------------------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
  missing=()
  for p in restic:restic borg:borgbackup /usr/bin/time:time b3sum:b3sum zstd:zstd lz4:lz4 hyperfine:hyperfine; do
    command -v "${p%%:*}" >/dev/null 2>&1 || missing+=("${p#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update
    apt-get install -y "${missing[@]}"
  fi
fi

# Build from the working tree (default), or from a clean export of LIFEBOAT_REV: other
# engineers edit crates/ while the benchmark runs, so a commit makes the figures reproducible.
if [ -n "${LIFEBOAT_REV:-}" ]; then
  REV="$(git -C "$ROOT" rev-parse --short "$LIFEBOAT_REV")"
  SRC="$WORK/src-$REV"
  if [ ! -d "$SRC" ]; then
    rm -rf "$SRC.tmp"; mkdir -p "$SRC.tmp"
    git -C "$ROOT" archive "$REV" | tar -x -C "$SRC.tmp"
    mv "$SRC.tmp" "$SRC"
  fi
else
  SRC="$ROOT"
  REV="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo '+dirty')"
fi
echo "building lifeboat $REV from $SRC (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$SRC" && cargo build --release -p lifeboat-cli)
# Copy the binary: other engineers rebuild while the benchmark runs.
mkdir -p "$WORK/bin"
cp "$CARGO_TARGET_DIR/release/lifeboat" "$WORK/bin/lifeboat"
LB="$WORK/bin/lifeboat"
echo "$REV $(sha256sum "$LB" | cut -c1-16)" >"$WORK/bin/lifeboat.rev"
echo "lifeboat at $REV: $LB"

# ---- dataset (shared by the variants) -------------------------------------------------------
if [ ! -d "$WORK/base" ]; then
  echo "generating dataset (scale $SCALE, seed $SEED) into $WORK/base"
  rm -rf "$WORK/base.tmp"
  python3 "$GEN" generate --out "$WORK/base.tmp" --scale "$SCALE" --seed "$SEED" | tee "$WORK/base.fingerprint"
  mv "$WORK/base.tmp" "$WORK/base"
fi

# ---- lifeboat hooks for the harness -----------------------------------------------------------
export TOOLS="${TOOLS:-restic borg extra}"
export EXTRA_NAME=lifeboat
export EXTRA_ENV="export LIFEBOAT_PASSWORD=bench LIFEBOAT_REPOSITORY=\"\$REPO\""
export EXTRA_VERSION="'$LB' --version; echo rev $REV"
export EXTRA_INIT="'$LB' --no-progress init"
export EXTRA_BACKUP="'$LB' --no-progress backup \"\$DATA\""
export EXTRA_RESTORE="'$LB' --no-progress restore latest --target \"\$TARGET\""
export EXTRA_RESTORED='$TARGET/data'
export EXTRA_CHECK="'$LB' --no-progress check --read-data"
export EXTRA_CHECK_META="'$LB' --no-progress check"

run_variant() {  # NAME RUNS REPO_BASE BASELINES
  local name="$1" runs="$2" repo_base="$3" baselines="$4" w="$WORK/$1"
  mkdir -p "$w"
  [ -e "$w/base" ] || ln -s "$WORK/base" "$w/base"
  if [ "$FRESH" = 1 ] && [ -f "$w/results/raw.tsv" ]; then
    local old="$w/results.$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$old"
    mv "$w/results/raw.tsv" "$w/results/sizes.tsv" "$old/"
    mv "$w/results/summary.md" "$w/results/logs" "$old/" 2>/dev/null || true
  fi
  echo "=== variant $name: RUNS=$runs REPO_BASE=$repo_base"
  WORK="$w" RUNS="$runs" REPO_BASE="$repo_base" BASELINES="$baselines" bash "$BENCH"
}

for v in $VARIANTS; do
  case "$v" in
    disk) run_variant disk "$RUNS" "$WORK/disk" 1 ;;
    tmpfs)
      [ "$(stat -f -c %T "$(dirname "$TMPFS_DIR")")" = tmpfs ] || { echo "$TMPFS_DIR is not on tmpfs" >&2; exit 1; }
      mkdir -p "$TMPFS_DIR"
      run_variant tmpfs "$TMPFS_RUNS" "$TMPFS_DIR" 0
      rm -rf "$TMPFS_DIR" ;;
    *) echo "unknown variant $v" >&2; exit 1 ;;
  esac
done

# ---- `snapshots` on a repository with SNAP_N snapshots ------------------------------------------
if [ "$SNAPSHOTS" = 1 ]; then
  S="$WORK/snapshots"
  rm -rf "$S"; mkdir -p "$S/src"
  out="$S/snapshots.tsv"
  printf 'tool\tsnapshots\truns\tmedian_s\tmin_s\tmax_s\tmaxrss_kb\n' >"$out"
  # small changing tree: a few files, one of them different in every snapshot
  for i in $(seq 1 20); do head -c 4096 "$WORK/base/db/shop_dump.sql" >"$S/src/f$i.sql"; done
  time_snapshots() {  # TOOL N CMD...
    local tool="$1" n="$2"; shift 2
    local j="$S/$tool.$n.hyperfine.json"
    hyperfine -N --warmup 3 --runs 21 --export-json "$j" -- "$(printf '%q ' "$@")" >"$S/$tool.$n.hyperfine.txt"
    /usr/bin/time -f %M -o "$S/$tool.$n.rss" "$@" >"$S/$tool.$n.out"
    python3 - "$j" "$tool" "$n" "$(cat "$S/$tool.$n.rss")" >>"$out" <<'EOF'
import json, sys, statistics
r = json.load(open(sys.argv[1]))["results"][0]["times"]
print("\t".join([sys.argv[2], sys.argv[3], str(len(r)), "%.4f" % statistics.median(r),
                 "%.4f" % min(r), "%.4f" % max(r), sys.argv[4]]))
EOF
  }
  export LIFEBOAT_PASSWORD=bench LIFEBOAT_REPOSITORY="$S/lifeboat-repo"
  "$LB" --no-progress init >/dev/null
  time_snapshots lifeboat 0 "$LB" --no-progress snapshots
  echo "creating $SNAP_N lifeboat snapshots"
  t0=$(date +%s.%N)
  for i in $(seq 1 "$SNAP_N"); do
    echo "$i" >"$S/src/counter"
    "$LB" --no-progress --quiet backup "$S/src" >/dev/null
  done
  t1=$(date +%s.%N)
  echo "lifeboat_small_backup_avg_s $(python3 -c "print(round(($t1-$t0)/$SNAP_N,3))")" >"$S/notes.txt"
  time_snapshots lifeboat "$SNAP_N" "$LB" --no-progress snapshots
  unset LIFEBOAT_PASSWORD LIFEBOAT_REPOSITORY
  if [ "$SNAP_RESTIC" = 1 ]; then
    export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$S/restic-repo" RESTIC_CACHE_DIR="$S/restic-cache"
    restic init >/dev/null
    echo "creating $SNAP_N restic snapshots"
    for i in $(seq 1 "$SNAP_N"); do
      echo "$i" >"$S/src/counter"
      restic backup --quiet "$S/src" >/dev/null
    done
    time_snapshots restic "$SNAP_N" restic snapshots
    unset RESTIC_PASSWORD RESTIC_REPOSITORY RESTIC_CACHE_DIR
  fi
  cat "$out"
fi

# ---- summary ---------------------------------------------------------------------------------
python3 "$ROOT/bench/summarize.py" --work "$WORK" | tee "$WORK/summary.md"
echo "summary: $WORK/summary.md"
