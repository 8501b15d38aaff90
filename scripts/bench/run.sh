#!/usr/bin/env bash
# Load test of whatsip on 127.0.0.1 (issue 7), bounded in calls and time.
#
#   scripts/bench/run.sh PROFILE RATE CONCURRENT HOLD_S TOTAL
#
# PROFILE: transcode (Opus ⇄ PCMU, SIPp answers PCMU) | passthrough (Opus both legs).
# Builds whatsip and the driver (crates/gateway/examples/bench_load.rs) in release, runs the
# gateway as its own process, whatsip-sim (with WebRTC phones) inside the driver and SIPp as
# the PBX with -rtp_echo. Writes $CARGO_TARGET_DIR/bench-results/<profile>-<rate>-<conc>-<hold>-<total>-<utc>.json
# and prints the table. Needs `sipp` (scripts/setup.sh). Env: CARGO_TARGET_DIR (default
# target), BENCH_OUT (results directory).
set -euo pipefail

if [ $# -ne 5 ]; then
    echo "usage: $0 transcode|passthrough RATE CONCURRENT HOLD_S TOTAL" >&2
    exit 2
fi
PROFILE=$1 RATE=$2 CONC=$3 HOLD=$4 TOTAL=$5
case $PROFILE in transcode | passthrough) ;; *) echo "unknown profile $PROFILE" >&2; exit 2 ;; esac
for n in "$RATE" "$CONC" "$HOLD" "$TOTAL"; do
    [[ $n =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "not a number: $n" >&2; exit 2; }
done
command -v sipp >/dev/null || { echo "sipp not found (scripts/setup.sh)" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=${BENCH_OUT:-$TARGET/bench-results}
mkdir -p "$OUT_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
NAME="$PROFILE-$RATE-$CONC-$HOLD-$TOTAL-$STAMP"
WORK=$(mktemp -d /tmp/whatsip-bench.XXXXXX)
# the driver writes the pids of the whatsip and SIPp processes it started; if the hard
# limit had to kill it, they are stopped here by pid
cleanup() {
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
        done <"$WORK/pids"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# bounded build
timeout 1800 cargo build --release -q -p whatsip-gateway --bin whatsip --example bench_load \
    --manifest-path "$ROOT/Cargo.toml"

# hard limit: placing the calls + hold + 3 minutes of setup/teardown slack
LIMIT=$(awk -v t="$TOTAL" -v r="$RATE" -v h="$HOLD" 'BEGIN { printf "%d", t / r + h + 180 }')
echo "bench: $NAME (limit ${LIMIT} s, load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
ulimit -n 65536 2>/dev/null || true
timeout --kill-after=10 "$LIMIT" "$TARGET/release/examples/bench_load" \
    --whatsip "$TARGET/release/whatsip" --repo "$ROOT" --profile "$PROFILE" \
    --rate "$RATE" --concurrent "$CONC" --hold "$HOLD" --total "$TOTAL" \
    --work-dir "$WORK" --out "$OUT_DIR/$NAME.json"
echo "report: $OUT_DIR/$NAME.json" >&2
