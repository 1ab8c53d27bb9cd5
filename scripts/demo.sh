#!/usr/bin/env bash
# The main job: a real mTLS round trip on a fresh embedded store.
#
# Creates a dev CA and certificates with `edgemtls pki`, starts a local upstream that
# requires client certificates, stores two certificates for two environments, serves the
# hello-mtls plugin in production and in preview, and shows which certificate the upstream
# saw each time, and a request that the upstream refuses because it named none. Then the
# same handler written in TypeScript (plugins/hello-mtls-js), built with `edgemtls build`
# (Node.js builds it; serving it needs none), makes the same round trip.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
echo "==> building edgemtls and the hello-mtls plugin"
# Building edgemtls builds its built-in plugins (hello-mtls among them) into target/guests:
# the demo serves that file rather than building the same guest a second time.
# Without jemalloc (the allocator every other build has, for speed under load): its C build
# would be the last thing a fresh machine waits for, and the demo needs no make.
cargo build -q -p edgemtls --no-default-features
bin="$PWD/target/debug/edgemtls"
plugin="$PWD/target/guests/wasm32-wasip2/release/hello_mtls.wasm"
[ -f "$plugin" ] || { echo "FAILED: building edgemtls did not leave $plugin" >&2; exit 1; }

work="$(mktemp -d -t edgemtls-demo.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 1200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 did not open" >&2; return 1; }
edgemtls() { echo "\$ edgemtls $*" >&2; "$bin" --store "$work/store" "$@"; }

# The TypeScript step's build (its first run installs the pinned npm packages, about a
# minute on a fresh machine) starts now and runs while the Rust handler's round trips do.
js_build=""
if command -v node >/dev/null && command -v npm >/dev/null; then
    "$bin" build plugins/hello-mtls-js/handler.ts -o "$work/hello-mtls-js.wasm" >"$work/js-build.log" 2>&1 &
    js_build=$!
    pids+=("$js_build")
fi
# GET URL BODY_FILE: prints the status code. Python, because a fresh machine may lack curl.
http_get() {
    python3 - "$1" "$2" <<'PY'
import sys, urllib.request, urllib.error
try:
    response = urllib.request.urlopen(sys.argv[1], timeout=30)
except urllib.error.HTTPError as error:
    response = error
open(sys.argv[2], "wb").write(response.read())
print(response.status if hasattr(response, "status") else response.code)
PY
}

echo "==> a dev CA, two client certificates and a server certificate"
edgemtls pki init --out "$work/pki"
edgemtls pki issue --ca "$work/pki" --cn billing-prod --out "$work/pki"
edgemtls pki issue --ca "$work/pki" --cn billing-staging --out "$work/pki"
edgemtls pki issue --ca "$work/pki" --cn localhost --server --san localhost --san 127.0.0.1 --out "$work/pki"

echo "==> storing them by name, scoped to an environment (keys sealed at rest)"
edgemtls cert create --name billing_prod --cert "$work/pki/billing-prod.pem" --key "$work/pki/billing-prod.key" --env production
edgemtls cert create --name billing_staging --cert "$work/pki/billing-staging.pem" --key "$work/pki/billing-staging.key" --env preview
edgemtls cert list

upstream_port="$(free_port)"
echo "==> an upstream on 127.0.0.1:$upstream_port that requires client certificates"
"$bin" dev-upstream --client-ca "$work/pki/ca.pem" --cert "$work/pki/localhost.pem" --key "$work/pki/localhost.key" \
    --listen "127.0.0.1:$upstream_port" &
pids+=($!)
wait_port "$upstream_port"

cat > "$work/edgemtls.toml" <<TOML
[environments.production.vars]
BACKEND_MTLS_CERT = "billing_prod"
[environments.preview.vars]
BACKEND_MTLS_CERT = "billing_staging"

[[routes]]
path = "/billing"
handler = "$plugin"
certificates = ["\$env(BACKEND_MTLS_CERT)"]   # the names this handler uses, checked at start
[routes.options]
url = "https://localhost:$upstream_port/invoices"

[[routes]]
path = "/anonymous"
handler = "$plugin"
[routes.options]
url = "https://localhost:$upstream_port/invoices"
mtlsCertificate = ""

[[upstreams]]
hosts = ["localhost:$upstream_port"]
ca_bundle = "pki/ca.pem"
TOML

for env in production preview; do
    port="$(free_port)"
    echo "==> serving in $env on 127.0.0.1:$port"
    "$bin" --store "$work/store" serve --config "$work/edgemtls.toml" --env "$env" --listen "127.0.0.1:$port" &
    pids+=($!)
    wait_port "$port"
    echo "\$ GET http://127.0.0.1:$port/billing"
    http_get "http://127.0.0.1:$port/billing" "$work/billing.json" >/dev/null
    body="$(cat "$work/billing.json")"
    echo "$body"
    expected=$([ "$env" = production ] && echo billing-prod || echo billing-staging)
    grep -q "\"client_cn\":\"$expected\"" <<<"$body" || { echo "FAILED: upstream did not see $expected" >&2; exit 1; }
    echo "    -> the upstream saw the client certificate '$expected'"
    if [ "$env" = production ]; then
        echo "\$ GET http://127.0.0.1:$port/anonymous   (names no certificate)"
        status="$(http_get "http://127.0.0.1:$port/anonymous" "$work/refused.json")"
        cat "$work/refused.json"; echo
        [ "$status" = 502 ] || { echo "FAILED: expected 502, got $status" >&2; exit 1; }
        echo "    -> refused by the upstream: no client certificate ($status)"
    fi
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done

echo "==> the same handler in TypeScript: plugins/hello-mtls-js/handler.ts"
if [ -n "$js_build" ]; then
    # The first build installs componentize-js and esbuild (pinned) into ~/.cache/edgemtls.
    echo "\$ edgemtls build plugins/hello-mtls-js/handler.ts -o hello-mtls-js.wasm   (started at the beginning)"
    if ! wait "$js_build"; then
        cat "$work/js-build.log" >&2
        echo "FAILED: edgemtls build could not build the TypeScript handler" >&2
        exit 1
    fi
    cat "$work/js-build.log"
    cat > "$work/edgemtls-js.toml" <<TOML
[environments.production.vars]
BACKEND_MTLS_CERT = "billing_prod"

[[routes]]
path = "/billing-js"
handler = "hello-mtls-js.wasm"
max_requests_per_instance = 1000
[routes.options]
url = "https://localhost:$upstream_port/invoices"

[[upstreams]]
hosts = ["localhost:$upstream_port"]
ca_bundle = "pki/ca.pem"
TOML
    port="$(free_port)"
    echo "==> serving the TypeScript handler in production on 127.0.0.1:$port"
    "$bin" --store "$work/store" serve --config "$work/edgemtls-js.toml" --env production --listen "127.0.0.1:$port" &
    pids+=($!)
    wait_port "$port"
    echo "\$ GET http://127.0.0.1:$port/billing-js"
    http_get "http://127.0.0.1:$port/billing-js" "$work/billing-js.json" >/dev/null
    body="$(cat "$work/billing-js.json")"
    echo "$body"
    grep -q '"client_cn":"billing-prod"' <<<"$body" || { echo "FAILED: the TypeScript handler's upstream did not see billing-prod" >&2; exit 1; }
    echo "    -> the upstream saw the client certificate 'billing-prod', named from TypeScript"
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
else
    echo "    (skipped: Node.js and npm build TypeScript handlers; install them to see this step)"
fi

echo "==> check: every certificate name the config uses resolves in production"
"$bin" --store "$work/store" check --config "$work/edgemtls.toml" --env production
echo "demo ok"
