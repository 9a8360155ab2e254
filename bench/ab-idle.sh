#!/usr/bin/env bash
# Idle RSS per stream of two server builds, A then B, on one SQLite database
# with the same load tool and cached tokens (the first run registers the
# 10,000 users; run A twice and count from the second). The README's
# per-stream memory comparison comes from this.
#
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release --bin earntrack)
#   cargo build --release --bins
#   bash bench/ab-idle.sh /tmp/base/target/release/earntrack target/release/earntrack
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2
dir="${BENCH_DIR:-target/bench-ab}"
port="${BENCH_PORT:-18091}"
mkdir -p "$dir"
ulimit -n 20000
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
run() { # label binary
    EARNTRACK_ADDR="127.0.0.1:$port" DATABASE_URL="sqlite://$dir/bench.db" JWT_SECRET=bench-secret-0123456789abcdefghijklmn \
    EARNTRACK_MAX_STREAMS_PER_USER=100 EARNTRACK_RATE_LIMIT_PER_MIN=0 EARNTRACK_AUTH_PER_ADDR_PER_MIN=0 \
    EARNTRACK_AUTH_PER_EMAIL_PER_MIN=0 EARNTRACK_HASH_WAIT_MS=60000 EARNTRACK_MAX_CONNECTIONS_PER_IP=0 RUST_LOG=warn \
        "$2" >"$dir/server-$1.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    "$target_dir/release/earntrack-bench" idle --streams 10000 --users 10000 --hold-s 30 \
        --url "http://127.0.0.1:$port" --server-pid "$pid" --token-cache "$dir/tokens.json" \
        --output "$dir/results.jsonl" --label "$1" --max-runtime-s 600 | grep -E "server_rss_per_stream_kib"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}
# The older build first: a newer one may migrate the database forward.
run A "$a"
run A "$a"
run B "$b"
