#!/usr/bin/env bash
# Cluster figures: several release servers on one fresh PostgreSQL database
# (created on 127.0.0.1:5432 as user postgres, dropped at the end), loaded by
# `earntrack-bench` on loopback. Scenarios:
#
#   a  3 servers, 10,000 streams: a burst of 20 broadcasts published through
#      server 1; deliveries/s and cross-server latency (servers 2 and 3)
#   b  3 servers, 5,000 streams: admin events to single users at 1,000/s
#      through server 1, only to users whose streams are on servers 2 and 3
#   c  the write ceiling: first PostgreSQL's own, with pgbench running the
#      same appends and commits as a published event (16 clients, 10 s),
#      without and with a NOTIFY inside; then 16 publishers sending back to
#      back for 10 s through 1 server vs 3 servers (events leave the commit
#      path: NOTIFY is batched after commit on a connection of its own);
#      then REST earnings writes the same way (16 publishers, each request
#      as a random user, two events per request), then the admin events with
#      synchronous_commit=off on the bench database
#      (diagnostic: how much of the ceiling is the WAL flush)
#   e  the write ceiling against publishers: 1 server, admin events from
#      1, 2, 4, 8, 16 and 32 publishers (BENCH_E_PUBLISHERS), labelled by
#      bus; docs/write-ceiling.svg is drawn from every `ceiling-*` line of
#      the results (run once per bus, and once with a pre-bus build, see
#      README)
#   d  6 servers, 100,000 streams (about 16,700 per server and per bench
#      process: both sides have 20,000 open files per process), one broadcast
#      every 2 s (5 in all) published by one process through server 1; skipped
#      with the reason when the memory measured in (a) says it cannot fit
#
# Results: one JSON line per bench process in $BENCH_DIR/results.jsonl,
# server logs in $BENCH_DIR/server-<scenario>-<n>.log. Every run is bounded
# (--max-runtime-s, bounded waits); everything started here is stopped on
# exit, also on error or Ctrl-C, and the database is dropped.
#
#   bash bench/cluster.sh          # all scenarios (about 15 min)
#   bash bench/cluster.sh c,d      # some scenarios (accounts are set up first)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-target/bench-cluster}"
# The load tool publishes with a publisher key: its own rate limit, and no
# admin account to register and grant.
export EARNTRACK_BENCH_PUBLISHER_KEY="${EARNTRACK_BENCH_PUBLISHER_KEY:-bench-publisher-key-0123456789abcdef}"
BENCH_PUBLISHER_KEY="$EARNTRACK_BENCH_PUBLISHER_KEY"
BASE_PORT="${BENCH_BASE_PORT:-18190}"   # servers listen on BASE_PORT+1 ...
USERS="${BENCH_USERS:-2000}"            # argon2: ~25 ms per registration
ONLY="${1:-}"
# The bus the servers use: EARNTRACK_BUS_URL=redis://… or nats://… in the
# environment puts them on Redis or NATS (labels say which).
case "${EARNTRACK_BUS_URL:-}" in
    "") BUS=postgres ;;
    redis*) BUS=redis ;;
    *) BUS=nats ;;
esac
# Another build's server (EARNTRACK_SERVER_BIN=path), under a label of its
# own (BENCH_BUS_LABEL, e.g. notify-in-commit for a build from before the
# bus): the load tool stays this tree's.
BUS="${BENCH_BUS_LABEL:-$BUS}"
DB="earntrack_bench_$$"
DB_URL="postgres://postgres@127.0.0.1:5432/$DB"
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt)
RESULTS="$BENCH_DIR/results.jsonl"
TOKENS="$BENCH_DIR/tokens.json"
# 100,000 connections need more ports than one source address has.
SOURCES=$(seq -s, -f '127.0.0.%g' 1 16)
STREAMS_PER_SERVER_MAX=17000

mkdir -p "$BENCH_DIR"
cargo build --release --bins
# Where cargo puts its binaries (CARGO_TARGET_DIR or the build config may
# move them away from ./target); python3 because jq may be missing.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
# Copies: a rebuild while this runs changes nothing here.
cp "${EARNTRACK_SERVER_BIN:-$target_dir/release/earntrack}" "$BENCH_DIR/earntrack-server"
cp "$target_dir/release/earntrack-bench" "$BENCH_DIR/earntrack-bench"
BENCH="$BENCH_DIR/earntrack-bench"
ulimit -n 20000
# Tokens belong to users of the database this run creates.
rm -f "$TOKENS"

SERVER_PIDS=()
BENCH_PIDS=()
SAMPLER_PID=""
DB_CREATED=""

stop_pid() { # pid: TERM, wait up to 15 s, then KILL
    local pid=$1
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "warning: pid $pid did not stop within 15 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid"; done
    SERVER_PIDS=()
}

cleanup() {
    local rc=$?
    set +e
    [[ -n "$SAMPLER_PID" ]] && stop_pid "$SAMPLER_PID"
    local pid
    for pid in "${BENCH_PIDS[@]}"; do stop_pid "$pid"; done
    stop_servers
    if [[ -n "$DB_CREATED" ]]; then
        "${PSQL[@]}" -d test -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" \
            && echo "dropped database $DB" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${PSQL[@]}" -d test -c "CREATE DATABASE $DB"
DB_CREATED=1
echo "database $DB; $(nproc) CPUs; $(free -g | awk '/^Mem/ {print $2" GiB RAM, "$7" GiB available"}')"

start_servers() { # scenario count
    local scenario=$1 count=$2 i port
    stop_servers
    for i in $(seq "$count"); do
        port=$((BASE_PORT + i))
        EARNTRACK_ADDR="127.0.0.1:$port" DATABASE_URL="$DB_URL" JWT_SECRET=bench-secret-0123456789abcdefghijklmn \
        EARNTRACK_PUBLISHER_KEYS="$BENCH_PUBLISHER_KEY" EARNTRACK_MAX_STREAMS_PER_USER=100 \
        EARNTRACK_RATE_LIMIT_PER_MIN=0 EARNTRACK_PUBLISHER_RATE_PER_SEC=0 EARNTRACK_AUTH_PER_ADDR_PER_MIN=0 EARNTRACK_AUTH_PER_EMAIL_PER_MIN=0 EARNTRACK_HASH_WAIT_MS=60000 EARNTRACK_MAX_CONNECTIONS_PER_IP=0 EARNTRACK_DB_POOL=4 RUST_LOG=warn \
            "$BENCH_DIR/earntrack-server" >"$BENCH_DIR/server-$scenario-$i.log" 2>&1 &
        SERVER_PIDS+=($!)
        # One at a time: the first one runs the migrations.
        local ready=""
        for _ in $(seq 300); do
            if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then ready=1; break; fi
            kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null || break
            sleep 0.1
        done
        if [[ -z "$ready" ]]; then
            echo "server $i did not start:" >&2
            tail -20 "$BENCH_DIR/server-$scenario-$i.log" >&2
            exit 1
        fi
    done
    # Let presence heartbeats of every server reach the others.
    sleep 2
}

urls() { # count -> comma-separated URLs of servers 1..count
    local i out=""
    for i in $(seq "$1"); do out+="${out:+,}http://127.0.0.1:$((BASE_PORT + i))"; done
    echo "$out"
}

pids() { local IFS=,; echo "${SERVER_PIDS[*]}"; }

server_problems() { # scenario: warnings and errors the servers logged
    local scenario=$1 f n
    for f in "$BENCH_DIR"/server-"$scenario"-*.log; do
        n=$(grep -cE 'WARN|ERROR|panicked' "$f" || true)
        if [[ "$n" -gt 0 ]]; then
            echo "-- $f: $n warning/error lines, first ones:"
            grep -E 'WARN|ERROR|panicked' "$f" | head -5
        fi
    done
}

pg_cpu_s() { # CPU seconds used so far by all PostgreSQL processes
    local pid total=0 t
    for pid in $(pgrep -u postgres || true); do
        t=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    awk -v t="$total" 'BEGIN {printf "%.2f", t / 100}'
}

bench() { # label args...: one bench process in the foreground
    local label=$1; shift
    echo
    echo "== $label: earntrack-bench $*"
    "$BENCH" "$@" --users "$USERS" --token-cache "$TOKENS" --source-ips "$SOURCES" \
        --output "$RESULTS" --label "$label"
}

last_result() { # label -> its JSON line
    grep -F "\"label\":\"$1\"" "$RESULTS" | tail -1
}

run() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

# Accounts once, through one server (argon2 makes this the slow part).
start_servers setup 1
"$BENCH" idle --url "$(urls 1)" --streams "$USERS" --users "$USERS" --hold-s 1 --settle-s 0 \
    --setup-concurrency 8 --token-cache "$TOKENS" --source-ips "$SOURCES" --max-runtime-s 900 \
    | tail -1 | jq -c '{setup_s, accounts_created, connected}'

if run a; then
    start_servers a 3
    bench cluster-fanout-3x10k fanout --url "$(urls 3)" --server-pid "$(pids)" \
        --streams 10000 --events 20 --max-runtime-s 600
    server_problems a
fi

if run b; then
    start_servers b 3
    bench "cluster-unicast-3x5k-$BUS" unicast --url "$(urls 3)" --server-pid "$(pids)" \
        --streams 5000 --rate "${BENCH_B_RATE:-1000}" --duration-s 10 --via admin-event --remote-only --max-runtime-s 600
    server_problems b
fi

notify_run() { # label servers [load-tool args]
    local label=$1 count=$2 samples="$BENCH_DIR/waits-$1.txt" cpu0 cpu1
    shift 2
    start_servers "$label" "$count"
    : >"$samples"
    # What the database sessions of the servers do while the publishers run
    # (bounded): running (CPU or a wait event: Lock/object is NOTIFY's
    # commit lock, IO/WALSync the flush), or idle in a transaction (waiting
    # for the server's next statement).
    (
        for _ in $(seq 240); do
            echo "# sample" >>"$samples"
            "${PSQL[@]}" -d test -F ' ' -c "SELECT replace(state, ' ', '_'),
                    coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-'), count(*)
                FROM pg_stat_activity WHERE datname = '$DB' AND state <> 'idle'
                AND pid <> pg_backend_pid() GROUP BY 1, 2, 3" >>"$samples" 2>/dev/null || true
            sleep 0.5
        done
    ) &
    SAMPLER_PID=$!
    cpu0=$(pg_cpu_s)
    bench "$label" notify --url "$(urls "$count")" --server-pid "$(pids)" \
        --streams "$USERS" --publishers "${PUBLISHERS:-16}" --duration-s 10 --settle-s 5 --max-runtime-s 600 "$@"
    cpu1=$(pg_cpu_s)
    stop_pid "$SAMPLER_PID"
    SAMPLER_PID=""
    echo "PostgreSQL CPU during the run (setup, streams and publishing): $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.1f", b - a}') s"
    echo "busy database sessions by state and wait event (summed over $(grep -c '^#' "$samples" || true) samples, 0.5 s apart):"
    awk '!/^#/ {n[$1" "$2" "$3] += $4} END {for (k in n) print "  " n[k], k}' "$samples" | sort -rn | head -8
    server_problems "$label"
}

# PostgreSQL alone, on the same tables: the append of one published event
# (the stream's next sequence, the log row) and its commit, by 16 clients.
pg_limit() { # label [notify]
    local script="$BENCH_DIR/pgbench-$1.sql" notify=${2:-}
    cat >"$script" <<SQL
\\set u random(1, 2000)
BEGIN;
INSERT INTO streams (key, seq, low) VALUES ('pgbench:' || :u, 1, 0)
    ON CONFLICT (key) DO UPDATE SET seq = streams.seq + 1 RETURNING seq \\gset
INSERT INTO event_log (stream, seq, event, envelope, created_at)
    VALUES ('pgbench:' || :u, :seq, 'bench', '{"event":"bench","timestamp":"2024-01-01T00:00:00.000Z","data":{"n":1}}', 0);
${notify:+SELECT pg_notify('earntrack_pgbench', 'x');}
COMMIT;
SQL
    local tps
    tps=$(pgbench -h 127.0.0.1 -U postgres -n -c 16 -j 2 -T 10 -f "$script" "$DB" 2>/dev/null |
        awk '/^tps/ {print int($3)}' | head -n1)
    echo "pgbench $1: $tps commits/s (16 clients, 10 s)"
    echo "{\"label\":\"pgbench-$1\",\"commits_per_s\":${tps:-0}}" >>"$RESULTS"
}

if run c; then
    # No server while PostgreSQL runs alone: the setup server's retention
    # pass would prune the pgbench streams while they are deleted below
    # (a deadlock that ended runs).
    stop_servers
    pg_limit plain
    pg_limit notify-inside notify
    "${PSQL[@]}" -d "$DB" -c "DELETE FROM event_log WHERE stream LIKE 'pgbench:%'; DELETE FROM streams WHERE key LIKE 'pgbench:%'"
    notify_run "cluster-notify-1-$BUS" 1
    notify_run "cluster-notify-3-$BUS" 3
    # REST writes: each request commits two events (earnings:new and its
    # notification) with the change, as their users.
    notify_run "cluster-rest-1-$BUS" 1 --via earnings
    notify_run "cluster-rest-3-$BUS" 3 --via earnings
    "${PSQL[@]}" -d test -c "ALTER DATABASE $DB SET synchronous_commit = off"
    notify_run "cluster-notify-1-async-$BUS" 1
    notify_run "cluster-notify-3-async-$BUS" 3
    "${PSQL[@]}" -d test -c "ALTER DATABASE $DB RESET synchronous_commit"
fi

if run e; then
    for p in ${BENCH_E_PUBLISHERS:-1 2 4 8 16 32}; do
        PUBLISHERS=$p notify_run "ceiling-$BUS-p$p" 1
    done
    grep '"label":"ceiling-' "$RESULTS" >"$BENCH_DIR/ceiling.jsonl" || true
    "$BENCH" plot --input "$BENCH_DIR/ceiling.jsonl" --output docs/write-ceiling.svg \
        --title "Write ceiling of one server on PostgreSQL, by bus"
fi

if run d; then
    SERVERS=6 TOTAL=100000
    PER=$(( (TOTAL + SERVERS - 1) / SERVERS ))
    # Memory: per-stream figures of (a) (server and client), else the worst
    # case quoted in the README brief (66 KiB per server stream, 20 client).
    a=$(last_result cluster-fanout-3x10k || true)
    [[ -n "$a" ]] || a='{}'
    srv=$(jq -r '.server_rss_per_stream_kib // 66' <<<"$a")
    cli=$(jq -r 'if .client_rss_kib and .connected then .client_rss_kib / .connected else 20 end' <<<"$a")
    need_mib=$(awk -v n="$TOTAL" -v s="$srv" -v c="$cli" 'BEGIN {printf "%d", n * (s + c) * 1.25 / 1024 + 1024}')
    avail_mib=$(awk '/^MemAvailable/ {printf "%d", $2 / 1024}' /proc/meminfo)
    echo
    echo "== d: $TOTAL streams on $SERVERS servers: need about $need_mib MiB ($srv KiB/stream server, $cli KiB/stream client, +25% +1 GiB), $avail_mib MiB available"
    if (( PER > STREAMS_PER_SERVER_MAX )); then
        echo "skipped: $PER streams per server exceed $STREAMS_PER_SERVER_MAX (20,000 open files per process)"
    elif (( need_mib > avail_mib )); then
        echo "skipped: not enough memory"
    else
        start_servers d "$SERVERS"
        run_id=$(( (RANDOM << 30) | (RANDOM << 15) | RANDOM ))
        rm -f "$BENCH_DIR"/ready-d-*
        # Listeners on servers 2..6, each its own process (open files).
        for i in $(seq 2 "$SERVERS"); do
            # Each process its own copy of the token cache (each saves it).
            cp "$TOKENS" "$BENCH_DIR/tokens-d-$i.json"
            "$BENCH" fanout --listen-only --run-id "$run_id" --ready-file "$BENCH_DIR/ready-d-$i" \
                --url "http://127.0.0.1:$((BASE_PORT + i))" --publish-url "$(urls 1)" \
                --server-pid "${SERVER_PIDS[$((i - 1))]}" --streams "$PER" --users "$USERS" \
                --events 5 --interval-ms 2000 --connect-concurrency 200 --connect-timeout-s 400 \
                --drain-timeout-s 420 --max-runtime-s 900 --threads 1 \
                --token-cache "$BENCH_DIR/tokens-d-$i.json" --source-ips "$SOURCES" --output "$RESULTS" \
                --label "cluster-100k-listener-$i" >"$BENCH_DIR/bench-d-$i.out" 2>"$BENCH_DIR/bench-d-$i.err" &
            BENCH_PIDS+=($!)
        done
        echo "waiting for $((SERVERS - 1)) listener processes to connect their streams"
        ready=""
        for _ in $(seq 600); do
            n=$(find "$BENCH_DIR" -maxdepth 1 -name 'ready-d-*' | wc -l)
            if (( n == SERVERS - 1 )); then ready=1; break; fi
            for pid in "${BENCH_PIDS[@]}"; do
                if ! kill -0 "$pid" 2>/dev/null; then echo "a listener process ended early" >&2; break 2; fi
            done
            sleep 1
        done
        if [[ -n "$ready" ]]; then
            echo "listeners ready: $(cat "$BENCH_DIR"/ready-d-* | awk '{s += $1} END {print s}') streams; free: $(free -m | awk '/^Mem/ {print $7" MiB available"}')"
            bench cluster-100k-publisher fanout --run-id "$run_id" --url "$(urls 1)" \
                --server-pid "${SERVER_PIDS[0]}" --streams "$PER" --events 5 --interval-ms 2000 \
                --connect-concurrency 200 --connect-timeout-s 400 --drain-timeout-s 120 \
                --max-runtime-s 900 --threads 1
        fi
        for pid in "${BENCH_PIDS[@]}"; do wait "$pid" || echo "a listener process failed (exit $?)" >&2; done
        BENCH_PIDS=()
        for i in $(seq 2 "$SERVERS"); do
            echo "-- listener $i:"; grep -E '^error|warning' "$BENCH_DIR/bench-d-$i.err" | head -3 || true
            tail -1 "$BENCH_DIR/bench-d-$i.out"
        done
        echo
        echo "== d summary"
        grep -F '"label":"cluster-100k-' "$RESULTS" | grep -F "\"run_id\":$run_id" | jq -s -c '{
            processes: length,
            streams_connected: (map(.connected) | add),
            expected: (map(.expected) | add),
            deliveries: (map(.deliveries) | add),
            lost: (map(.lost) | add),
            all_received: ((map(.lost) | add) == 0),
            cross_server_p50_ms_worst: (map(select(.label != "cluster-100k-publisher") | .p50_ms) | max),
            cross_server_p99_ms_worst: (map(select(.label != "cluster-100k-publisher") | .p99_ms) | max),
            local_p99_ms: (map(select(.label == "cluster-100k-publisher") | .p99_ms) | max),
            server_rss_connected_mib: ((map(.server_rss_connected_kib) | add) / 1024 | floor),
            client_rss_mib: ((map(.client_rss_kib) | add) / 1024 | floor)}'
        server_problems d
    fi
fi
stop_servers
echo "results: $RESULTS"
