#!/usr/bin/env bash
# The measurement sweep of docs/benchmarks.md ("Load: whole calls through the gateway"):
# pass-through and transcoding at rising concurrency and signalling at rising call rate,
# whatsip pinned alone on CPU 0, the load generators on CPU 1 (BENCH_PIN=1). Every run is
# bounded by run.sh's hard limit; the whole sweep by SWEEP_LIMIT_S (default 1500 s).
#
#   scripts/bench/sweep.sh [passthrough|transcode|signalling|outbound|mixed ...]
#
# outbound and mixed (not run by default) place business-initiated calls with SIPp as a UAC
# playing a pcap (root needed; one SIPp thread per call, so mind SIPp's CPU in the report).
#
# Prints one summary line per run (and run.sh keeps each JSON report, the gateway's log and
# its /metrics in $CARGO_TARGET_DIR/bench-results).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEADLINE=$(($(date +%s) + ${SWEEP_LIMIT_S:-1500}))
export BENCH_PIN=${BENCH_PIN:-1}
WHICH=("$@")
[ ${#WHICH[@]} -gt 0 ] || WHICH=(passthrough transcode signalling)

run() {
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
        echo "sweep: time is up, skipping $*" >&2
        return 0
    fi
    echo "=== run.sh $* (load $(cut -d' ' -f1-3 /proc/loadavg))"
    "$HERE/run.sh" "$@" 2>&1 | grep -E '^\||^report:' || true
}

for w in "${WHICH[@]}"; do
    case $w in
    passthrough)
        # rate high enough that CONCURRENT is reached within the first third of the run
        run passthrough 20 100 20 150
        run passthrough 25 200 20 300
        run passthrough 40 400 20 600
        ;;
    transcode)
        run transcode 10 50 20 80
        run transcode 10 100 20 150
        run transcode 20 200 20 300
        ;;
    signalling)
        run signalling 50 200 0.5 250
        run signalling 100 400 0.5 500
        run signalling 200 800 0.5 1000
        ;;
    outbound)
        run passthrough 20 100 20 150 --direction outbound
        run passthrough 25 300 20 400 --direction outbound
        run transcode 10 100 20 150 --direction outbound
        run signalling 50 200 0.5 250 --direction outbound
        ;;
    mixed)
        # RATE / CONCURRENT / TOTAL per direction: 100 + 100, then 300 + 300
        run passthrough 20 100 20 150 --direction mixed
        run passthrough 25 300 20 400 --direction mixed
        ;;
    *) echo "unknown profile $w" >&2; exit 2 ;;
    esac
done
