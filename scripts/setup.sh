#!/usr/bin/env bash
# Installs what whatsip needs to build and test on Debian 12, idempotently.
# Run as root (or with sudo available). Safe to run again: it only installs what is missing.
set -euo pipefail

# Debian packages: build (libopus for the Opus transcoder, found through pkg-config),
# test peers (SIPp = sip-tester) and media tools used by the tests.
PKGS=(pkg-config libopus-dev sip-tester opus-tools sox)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install the Rust toolchain (>= 1.95) with rustup:" >&2
  echo "       https://rustup.rs, then run this script again." >&2
  exit 1
fi
