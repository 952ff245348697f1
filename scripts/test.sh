#!/usr/bin/env bash
# Sets up and runs every check CI runs: formatting, clippy (warnings are errors), and all
# tests, including the process-level ones in chaos-tests (which need the binaries built).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace
