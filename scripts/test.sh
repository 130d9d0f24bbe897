#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Programs the integration tests drive (installed only when missing):
# rsyslog and its OpenSSL stream driver for the audit trail's syslog sink (plain TCP and TLS).
if ! command -v rsyslogd >/dev/null 2>&1 && [ ! -x /usr/sbin/rsyslogd ] \
    || ! dpkg -s rsyslog-openssl >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    pkgs="rsyslog rsyslog-openssl"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
        || { $SUDO apt-get update \
            && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; }
fi

# Node.js packages: the npm `oidc-provider` (OpenID Certified) that tests/it/oidc.rs runs as the
# identity provider, pinned by tests/oidc-provider/package-lock.json.
if [ ! -d tests/oidc-provider/node_modules/oidc-provider ]; then
    npm ci --no-audit --no-fund --prefix tests/oidc-provider
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# Includes the attack battery (tests/it/attacks/), the Wycheproof JOSE vectors in
# tests/data/wycheproof and the fuzz target bodies over fuzz/corpus (coverage-guided
# `cargo fuzz` runs need nightly features and ~10 minutes of instrumented builds: fuzz/README.md).
cargo test --locked --all-targets
# The security team's policy tests, as they run them.
cargo run --locked --quiet -- test --config examples/wardgate.yaml
# The Helm chart (helm/wardgate): lint, render, Kubernetes schemas, checkov, assertions.
bash scripts/test-helm.sh
