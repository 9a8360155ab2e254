#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine (as root, as this
# project's machines are): it installs, once and idempotently, what the
# browser tests need, then runs every suite.
#   1. cargo tests on SQLite: unit tests and tests/api (the real server on a
#      real socket, a real SSE client)
#   2. with POSTGRES_URL set: the cluster tests (several real server
#      processes on one database; they skip, saying so, without it, and in
#      CI, where CI is set, fail) on the PostgreSQL bus, again on the Redis
#      bus (REDIS_URL, default redis://127.0.0.1:6379/) and again on the
#      NATS bus (NATS_URL, default nats://127.0.0.1:4222; its cut test also
#      runs a nats-server binary of its own); each of those two is skipped,
#      saying so, when its server does not answer (or, for NATS, there is no
#      nats-server binary), except in CI; and the
#      same tests/api suite again on PostgreSQL (a fresh database per test)
#   3. schemathesis (in a venv) against /api/openapi.json of a live server
#   4. the web client in headless Chromium (tests/e2e)
set -euo pipefail
cd "$(dirname "$0")/.."

threads="${TEST_THREADS:-4}"

in_ci() { [[ -n "${CI:-}" && "${CI}" != false && "${CI}" != 0 ]]; }

if [[ -z "${POSTGRES_URL:-}" ]] && in_ci; then
    # In CI a skipped suite would pass without testing anything.
    echo "== POSTGRES_URL unset in CI: the PostgreSQL and cluster suites cannot be skipped" >&2
    exit 1
fi

echo "== building"
cargo build --bins
# Where cargo puts its binaries (CARGO_TARGET_DIR or the build config may
# move them away from ./target); python3 because jq may be missing.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
# The server binary of the schemathesis and browser suites.
export EARNTRACK_BIN="$target_dir/debug/earntrack"

# Whether something listens at URL's host:port (scheme, credentials and path
# dropped; DEFAULT_PORT when it names none).
answers() { # url default_port
    local hostport="${1#*://}"
    hostport="${hostport%%/*}"
    hostport="${hostport##*@}"
    [[ "$hostport" == *:* ]] || hostport="$hostport:$2"
    (exec 3<>"/dev/tcp/${hostport%%:*}/${hostport##*:}") 2>/dev/null
}

# The cluster suite on one bus, or why not: an error in CI, a skip elsewhere.
cluster_suite() { # name url missing env...
    local name=$1 url=$2 missing=$3
    shift 3
    if [[ -z "$missing" ]]; then
        echo "== tests/cluster on the $name bus ($url)"
        env "$@" cargo test --test cluster -- --test-threads="$threads"
    elif in_ci; then
        echo "== $missing in CI: the $name bus suite cannot be skipped" >&2
        exit 1
    else
        echo "== $missing: skipping the cluster suite on the $name bus"
    fi
}

echo "== cargo tests: unit, tests/api on SQLite, tests/cluster (needs POSTGRES_URL)"
cargo test --all-targets -- --test-threads="$threads"

if [[ -n "${POSTGRES_URL:-}" ]]; then
    echo "== tests/api on PostgreSQL"
    EARNTRACK_TEST_BACKEND=postgres cargo test --test api -- --test-threads="$threads"
    redis_url="${REDIS_URL:-redis://127.0.0.1:6379/}"
    missing=""
    answers "$redis_url" 6379 || missing="no Redis at $redis_url"
    cluster_suite Redis "$redis_url" "$missing" EARNTRACK_TEST_BUS=redis REDIS_URL="$redis_url"
    nats_url="${NATS_URL:-nats://127.0.0.1:4222}"
    missing=""
    if ! command -v nats-server >/dev/null 2>&1; then
        missing="no nats-server binary (the cut test starts one of its own)"
    elif ! answers "$nats_url" 4222; then
        missing="no NATS at $nats_url"
    fi
    cluster_suite NATS "$nats_url" "$missing" EARNTRACK_TEST_BUS=nats NATS_URL="$nats_url"
else
    echo "== POSTGRES_URL unset: skipping the PostgreSQL and cluster suites"
fi

echo "== schemathesis: the OpenAPI document against a live server"
bash tests/schemathesis/run.sh

echo "== web client end-to-end (headless Chromium)"
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [[ ! -d tests/e2e/node_modules/playwright-core ]]; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi
node --test tests/e2e/
