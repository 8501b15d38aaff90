#!/usr/bin/env bash
# Transactions per second on loopback: SIPp UAC (tests/sipp/uac_call.xml, signalling only)
# at a fixed call rate against the whatsip test UAS (crates/sip/examples/test_uas.rs).
# Each call is two transactions (INVITE, BYE) plus an ACK: 3 requests in, 4 responses out
# (100, 180, 200, and 200 for the BYE). Reports calls/s, transactions/s and UAS CPU.
#
# usage: scripts/bench-sip-tps.sh [RATE_CPS] [CALLS] [udp|tcp]
# Bounded: CALLS calls, SIPp -timeout, and the UAS exits on its own after the run.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${1:-500}
CALLS=${2:-10000}
TRANSPORT=${3:-udp}
case "$TRANSPORT" in udp) T=u1 ;; tcp) T=t1 ;; *) echo "transport: udp|tcp" >&2; exit 2 ;; esac

./scripts/install-test-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet -p whatsip-sip --example test_uas
UAS_BIN="$CARGO_TARGET_DIR/release/examples/test_uas"

PORT=$((20000 + RANDOM % 20000))
SIPP_PORT=$((PORT + 1))
LIMIT=$(( CALLS / RATE + 60 ))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$UAS_BIN" --udp 127.0.0.1:$PORT --tcp 127.0.0.1:$PORT --seconds $((LIMIT + 10)) 2>"$WORK/uas.log" &
UAS_PID=$!
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
T0=$(ticks $UAS_PID)
START=$(date +%s.%N)
set +e
( cd "$WORK" && sipp 127.0.0.1:$PORT -sf "$OLDPWD/tests/sipp/uac_call.xml" -s answer \
    -i 127.0.0.1 -p $SIPP_PORT -mp $((PORT + 2)) -t $T -r "$RATE" -m "$CALLS" -l $((RATE * 4)) \
    -d 0 -nostdin -timeout ${LIMIT}s -timeout_error -trace_stat -fd 1 >/dev/null 2>&1 )
CODE=$?
set -e
END=$(date +%s.%N)
T1=$(ticks $UAS_PID)
kill -INT "$UAS_PID" 2>/dev/null || true
wait "$UAS_PID" 2>/dev/null || true

CSV=$(ls "$WORK"/*_.csv | head -1)
col() { awk -F';' -v name="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==name) c=i} END{print $c}' "$CSV"; }
OK=$(col 'SuccessfulCall(C)')
FAILED=$(col 'FailedCall(C)')
RETR=$(col 'Retransmissions(C)')
HZ=$(getconf CLK_TCK)
calc() { awk "BEGIN{print $1}"; }
ELAPSED=$(calc "$END - $START")
CPU=$(calc "($T1 - $T0) / $HZ")
printf 'transport=%s rate=%s cps calls=%s ok=%s failed=%s retransmissions=%s sipp_exit=%s\n' \
  "$TRANSPORT" "$RATE" "$CALLS" "$OK" "$FAILED" "$RETR" "$CODE"
printf 'elapsed=%.2f s  calls/s=%.1f  transactions/s=%.1f  uas_cpu=%.2f s  uas_cpu_per_call=%.1f us\n' \
  "$ELAPSED" "$(calc "$OK / $ELAPSED")" "$(calc "2 * $OK / $ELAPSED")" \
  "$CPU" "$(calc "$CPU * 1000000 / ($OK + 0.000001)")"
tail -2 "$WORK/uas.log"
