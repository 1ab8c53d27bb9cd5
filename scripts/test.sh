#!/usr/bin/env bash
# The test command from the README: installs the system packages and the wasm target the
# tests use, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v make >/dev/null || need_apt+=(make)   # jemalloc (the binary's allocator) builds with make
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)       # a real inbound-mTLS client in the tests
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
# The shared-store tests start their own throwaway PostgreSQL from the package's binaries.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
# The PKCS#11 tests make throwaway SoftHSM2 tokens.
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "warning: ${need_apt[*]} missing and not root; tests that need them will skip" >&2
    fi
fi
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
cargo nextest run --no-fail-fast "$@"
