#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Nothing beyond the Rust toolchain is needed yet; later test suites install their programs here.
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
# The security team's policy tests, as they run them.
cargo run --locked --quiet -- test --config examples/wardgate.yaml
