#!/usr/bin/env bash
# Load test of whatsip on 127.0.0.1 (issue 7), bounded in calls and time.
#
#   scripts/bench/run.sh PROFILE RATE CONCURRENT HOLD_S TOTAL [--direction D] [DRIVER OPTIONS...]
#
# PROFILE: transcode (Opus ⇄ PCMU, SIPp answers PCMU) | passthrough (Opus both legs) |
# signalling (call setup only: phones do ICE + DTLS-SRTP but send no audio; use a short hold).
# --direction (default inbound):
#   inbound   simulated WhatsApp users call in; SIPp (UAS) answers and echoes the RTP;
#   outbound  SIPp (UAC, scripts/bench/uac_pcap.xml) places business-initiated calls to
#             simulated users who pick up at once, holds HOLD_S and sends BYE; its RTP is
#             played from a pcap the driver generates at start (Opus PT 111 / PCMU PT 0,
#             600 Hz; none for signalling). pcap play needs root (raw socket) and costs SIPp
#             one thread per call: heavy beyond about 300 concurrent calls;
#   mixed     both at once, RATE / CONCURRENT / TOTAL per direction ("N + N" runs).
# Builds whatsip and the driver (crates/gateway/examples/bench_load.rs) in release, runs the
# gateway as its own process, whatsip-sim (with WebRTC phones) inside the driver and SIPp as
# the PBX. Writes $CARGO_TARGET_DIR/bench-results/<profile>-<phones>[-pinned][-<direction>]-<rate>-<conc>-<hold>-<total>-<utc>.json
# and prints the table. Needs `sipp` (scripts/setup.sh).
#
# Env: CARGO_TARGET_DIR (default target), BENCH_OUT (results directory),
#   BENCH_PIN=1       whatsip alone on CPU 0, the driver (simulator + phones) and SIPp on CPU 1
#                     (taskset), so "calls per core" is measured directly;
#   BENCH_PHONES      light (default: pre-encoded Opus, sampled decoding) | full;
#   BENCH_WHATSIP     the whatsip binary to measure (default: the one just built), e.g. a
#                     copy of an older build, to compare two builds under the same load.
# Driver options after TOTAL go to bench_load as they are, e.g. `--decode-one-in 25`,
# `--media "webrtc_sockets = 1"` (a line for the gateway's [media] section; repeatable).
set -euo pipefail

if [ $# -lt 5 ]; then
    echo "usage: $0 transcode|passthrough|signalling RATE CONCURRENT HOLD_S TOTAL [driver options]" >&2
    exit 2
fi
PROFILE=$1 RATE=$2 CONC=$3 HOLD=$4 TOTAL=$5
shift 5
case $PROFILE in transcode | passthrough | signalling) ;; *) echo "unknown profile $PROFILE" >&2; exit 2 ;; esac
for n in "$RATE" "$CONC" "$HOLD" "$TOTAL"; do
    [[ $n =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "not a number: $n" >&2; exit 2; }
done
command -v sipp >/dev/null || { echo "sipp not found (scripts/setup.sh)" >&2; exit 1; }
DIRECTION=inbound
prev=""
for a in "$@"; do
    [ "$prev" = --direction ] && DIRECTION=$a
    prev=$a
done
case $DIRECTION in inbound | outbound | mixed) ;; *) echo "--direction inbound|outbound|mixed" >&2; exit 2 ;; esac
PHONES=${BENCH_PHONES:-light}
case $PHONES in light | full) ;; *) echo "BENCH_PHONES: light|full" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=${BENCH_OUT:-$TARGET/bench-results}
mkdir -p "$OUT_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
PIN_TAG=""
PIN=()
GW_CPUS=()
if [ "${BENCH_PIN:-0}" = 1 ]; then
    [ "$(nproc --all)" -ge 2 ] || { echo "BENCH_PIN needs 2 CPUs" >&2; exit 1; }
    PIN=(taskset -c 1)
    GW_CPUS=(--gateway-cpus 0)
    PIN_TAG="-pinned"
fi
DIR_TAG=""
[ "$DIRECTION" = inbound ] || DIR_TAG="-$DIRECTION"
NAME="$PROFILE-$PHONES$PIN_TAG$DIR_TAG-$RATE-$CONC-$HOLD-$TOTAL-$STAMP"
WORK=$(mktemp -d /tmp/whatsip-bench.XXXXXX)
# the driver writes the pids of the whatsip and SIPp processes it started; if the hard
# limit had to kill it, they are stopped here by pid
cleanup() {
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
        done <"$WORK/pids"
    fi
    # keep the gateway's log and metrics next to the report (compressed; small)
    [ -f "$WORK/whatsip.log" ] && gzip -c "$WORK/whatsip.log" >"$OUT_DIR/$NAME.whatsip.log.gz" || true
    [ -f "$WORK/metrics.txt" ] && cp "$WORK/metrics.txt" "$OUT_DIR/$NAME.metrics.txt" || true
    [ -s "$WORK/sipp_errors.log" ] && tail -c 200000 "$WORK/sipp_errors.log" >"$OUT_DIR/$NAME.sipp_errors.log" || true
    [ -s "$WORK/sipp_uac_errors.log" ] && tail -c 200000 "$WORK/sipp_uac_errors.log" >"$OUT_DIR/$NAME.sipp_uac_errors.log" || true
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
timeout --kill-after=10 "$LIMIT" "${PIN[@]}" "$TARGET/release/examples/bench_load" \
    --whatsip "${BENCH_WHATSIP:-$TARGET/release/whatsip}" --repo "$ROOT" --profile "$PROFILE" \
    --rate "$RATE" --concurrent "$CONC" --hold "$HOLD" --total "$TOTAL" \
    --phones "$PHONES" "${GW_CPUS[@]}" \
    --work-dir "$WORK" --out "$OUT_DIR/$NAME.json" "$@"
echo "report: $OUT_DIR/$NAME.json" >&2
