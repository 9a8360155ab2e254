#!/usr/bin/env bash
# The README's performance figures: build the release binaries, then for each
# scenario start a fresh server process on one SQLite database (kept in
# $BENCH_DIR with the load tool's token cache, so the 10,000 accounts are
# registered once) and run `earntrack-bench` against it on loopback.
# Results: one JSON line per run in $BENCH_DIR/results.jsonl, and the plot
# docs/bench.svg. Every run is bounded (--max-runtime-s) and stops by itself.
#
#   bash bench/run.sh            # all scenarios (~3 min once the accounts exist)
#   bash bench/run.sh idle-10k   # one scenario
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-target/bench}"
# The load tool publishes with a publisher key: its own rate limit, and no
# admin account to register and grant.
export EARNTRACK_BENCH_PUBLISHER_KEY="${EARNTRACK_BENCH_PUBLISHER_KEY:-bench-publisher-key-0123456789abcdef}"
BENCH_PUBLISHER_KEY="$EARNTRACK_BENCH_PUBLISHER_KEY"
PORT="${BENCH_PORT:-18090}"
mkdir -p "$BENCH_DIR"
cargo build --release --bins
# Where cargo puts its binaries (CARGO_TARGET_DIR or the build config may
# move them away from ./target); python3 because jq may be missing.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
release="$target_dir/release"
# Another build's server (EARNTRACK_SERVER_BIN=path), to compare two builds
# in alternating runs on one database.
cp "${EARNTRACK_SERVER_BIN:-$release/earntrack}" "$BENCH_DIR/earntrack-server"
ulimit -n 20000

server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
trap stop_server EXIT

start_server() {
    stop_server
    EARNTRACK_ADDR="127.0.0.1:$PORT" DATABASE_URL="sqlite://$BENCH_DIR/bench.db" JWT_SECRET=bench-secret-0123456789abcdefghijklmn \
    EARNTRACK_PUBLISHER_KEYS="$BENCH_PUBLISHER_KEY" EARNTRACK_MAX_STREAMS_PER_USER=100 \
    EARNTRACK_RATE_LIMIT_PER_MIN=0 EARNTRACK_PUBLISHER_RATE_PER_SEC=0 EARNTRACK_AUTH_PER_ADDR_PER_MIN=0 EARNTRACK_AUTH_PER_EMAIL_PER_MIN=0 EARNTRACK_HASH_WAIT_MS=60000 EARNTRACK_MAX_CONNECTIONS_PER_IP=0 RUST_LOG=warn \
        "$BENCH_DIR/earntrack-server" >"$BENCH_DIR/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
    echo "server did not start" >&2; exit 1
}

run() {
    local name=$1; shift
    if [[ -n "${ONLY:-}" && "$ONLY" != "$name" ]]; then return; fi
    start_server
    echo "== $name: earntrack-bench $*"
    "$release/earntrack-bench" "$@" --url "http://127.0.0.1:$PORT" --server-pid "$server_pid" \
        --token-cache "$BENCH_DIR/tokens.json" --output "$BENCH_DIR/results.jsonl" --label "$name" --max-runtime-s 600
}

ONLY="${1:-}"
run idle-1k        idle    --streams 1000  --users 1000  --hold-s 30
run idle-5k        idle    --streams 5000  --users 5000  --hold-s 30
run idle-10k       idle    --streams 10000 --users 10000 --hold-s 30
run idle-19k       idle    --streams 19000 --users 10000 --hold-s 30
run idle-10k-gzip  idle    --streams 10000 --users 10000 --hold-s 30 --gzip
run fanout-burst-1k fanout --streams 1000  --users 1000  --events 20
run fanout-burst-5k fanout --streams 5000  --users 5000  --events 20
run fanout-burst   fanout  --streams 10000 --users 10000 --events 20
run fanout-500ms   fanout  --streams 10000 --users 10000 --events 20 --interval-ms 500
run unicast-admin  unicast --streams 5000  --users 5000  --rate 1000 --duration-s 10 --via admin-event
run unicast-rest   unicast --streams 5000  --users 5000  --rate 1000 --duration-s 10 --via earnings
run unicast-rest-5k unicast --streams 5000 --users 5000 --rate 5000 --duration-s 10 --via earnings
run unicast-rest-gzip unicast --streams 5000 --users 5000 --rate 1000 --duration-s 10 --via earnings --gzip
stop_server
"$release/earntrack-bench" plot --input "$BENCH_DIR/results.jsonl" --output docs/bench.svg
