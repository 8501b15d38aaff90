#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
# Installs its own Debian packages (SIPp, libopus, ...) first, then checks formatting and lints,
# and runs every test in the workspace. Long soak/load runs are behind WHATSIP_LONG=1.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cores build without tokio"
cargo check --locked --no-default-features -p whatsip-sip -p whatsip-media -p whatsip-meta

echo "== cargo test"
cargo test --workspace --locked
