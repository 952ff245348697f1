#!/usr/bin/env bash
# Sets up and runs every check CI runs: formatting, clippy (warnings are errors), and all
# tests, including the process-level ones in chaos-tests (which need the binaries built).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
# The real-QEMU tests need a libvirt daemon; there is no systemd to start one.
./scripts/libvirtd.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# nextest runs each test in its own process and kills one that hangs (.config/nextest.toml),
# so a stuck test fails by name instead of stalling CI. Plain cargo test is the fallback,
# bounded as a whole.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace
else
    echo "cargo-nextest not found: running cargo test with a 30-minute bound" >&2
    timeout 1800 cargo test --workspace
fi
