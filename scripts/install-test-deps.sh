#!/usr/bin/env bash
# Installs the peers the SIP interop tests need (SIPp, Debian package sip-tester),
# idempotently: apt runs only when `sipp` is missing. Run as root or with sudo.
set -euo pipefail

if command -v sipp >/dev/null 2>&1; then
  exit 0
fi
echo "install-test-deps: sipp missing, installing sip-tester" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends sip-tester
command -v sipp >/dev/null 2>&1
