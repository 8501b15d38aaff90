#!/usr/bin/env bash
# Runs the embedded demo: the Meta simulator, the gateway and a stand-in PBX on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release --locked -p whatsip-gateway --bin whatsip -- demo "$@"
