#!/usr/bin/env bash
# The test command (README.md): installs the SIP peer the end-to-end tests drive
# (sipp, Debian's sip-tester) when it is missing, then runs every test of the
# workspace: unit tests, the RFC 4475 torture suite and the sipp end-to-end calls.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v sipp >/dev/null 2>&1; then
    echo "tests/run.sh: installing sipp (Debian package sip-tester)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends sip-tester >/dev/null
fi

exec cargo test --workspace --all-targets --locked "$@"
