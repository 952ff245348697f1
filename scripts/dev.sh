#!/usr/bin/env bash
# Sets up and runs a local drover cluster: 3 controllers and 3 hostd agents on libvirt's
# test:///default driver, all on loopback. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --bins
exec ./target/debug/drover dev "$@"
