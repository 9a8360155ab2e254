#!/usr/bin/env bash
# Property-based testing of the REST API with Schemathesis, against the
# OpenAPI document the server itself serves (GET /api/openapi.json).
#
# Starts the debug earntrack binary (build it first: `cargo build --bins`) on a
# free port with a throw-away SQLite database, registers a normal user and
# an admin, gives each a platform and a few earnings (so generated requests
# can name real rows, see write_config), then runs Schemathesis once per
# role. Every response must be: no 5xx, a status code the document lists,
# the documented content type, the documented headers, and a body that
# matches the documented schema. Exits non-zero on any failure; the last
# line sums both runs up.
#
# Usage: cargo build --bins && bash tests/schemathesis/run.sh
#
# Left out: GET /events (endless SSE stream, not in the document) and
# GET /events/poll (waits up to 30 s); tests/api covers both.
#
# Environment knobs (all optional):
#   SCHEMATHESIS_SEED          fixed seed (default 20240115)
#   SCHEMATHESIS_MAX_EXAMPLES  generated cases per operation and phase (default 30)
#   SCHEMATHESIS_WORKERS       concurrent workers (default 1)
#   SCHEMATHESIS_CHECKS        checks (default: the five conformance checks above)
#   SCHEMATHESIS_PHASES        phases (default examples,coverage,fuzzing,stateful)
#   EARNTRACK_BIN              server binary (default debug/earntrack in cargo's
#                              target folder, which CARGO_TARGET_DIR may move)
#   SCHEMATHESIS_REPORT_DIR    keep the JSON/JUnit reports and the server log here
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here="$root/tests/schemathesis"

seed="${SCHEMATHESIS_SEED:-20240115}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-30}"
# One worker: with two, hypothesis parses lambdas' source from two threads,
# which CPython 3.11's AST constructor does not survive ("AST constructor
# recursion depth mismatch", a tool error seen once in CI, not a finding).
workers="${SCHEMATHESIS_WORKERS:-1}"
if [[ -z "${EARNTRACK_BIN:-}" ]]; then
    # Where cargo puts its binaries (CARGO_TARGET_DIR or the build config may
    # move them away from ./target); python3 because jq may be missing.
    target_dir="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    EARNTRACK_BIN="$target_dir/debug/earntrack"
fi
bin="$EARNTRACK_BIN"
venv="$root/.venv"
started=$SECONDS

# ---- the venv (created once; reinstalled only when requirements change) ----
if [[ ! -x "$venv/bin/python" ]]; then
    python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
stamp="$venv/.schemathesis-requirements.txt"
if ! cmp -s "$here/requirements.txt" "$stamp" || [[ ! -x "$venv/bin/schemathesis" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi
py="$venv/bin/python"

if [[ ! -x "$bin" ]]; then
    echo "schemathesis: $bin not found; run \`cargo build --bins\` first" >&2
    exit 2
fi

# ---- the server ----
tmp="$(mktemp -d "${TMPDIR:-/tmp}/earntrack-schemathesis.XXXXXX")"
server_pid=""
schemathesis_pid=""
cleanup() {
    local status=$?
    if [[ -n "$schemathesis_pid" ]] && kill -0 "$schemathesis_pid" 2>/dev/null; then
        kill -TERM "$schemathesis_pid" 2>/dev/null || true
        wait "$schemathesis_pid" 2>/dev/null || true
    fi
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]]; then
        mkdir -p "$SCHEMATHESIS_REPORT_DIR"
        cp -r "$tmp"/. "$SCHEMATHESIS_REPORT_DIR"/ 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: the kernel picks a free port and the server logs the one it got,
# so no other process can take it between choosing and binding.
EARNTRACK_ADDR=127.0.0.1:0 \
DATABASE_URL="sqlite://$tmp/schemathesis.db" \
JWT_SECRET="schemathesis-secret-$RANDOM$RANDOM-0123456789abcdef" \
EARNTRACK_RATE_LIMIT_PER_MIN=0 \
NO_COLOR=1 \
RUST_LOG=warn,earntrack=info \
    "$bin" >"$tmp/server.log" 2>&1 &
server_pid=$!

base=""
for _ in $(seq 1 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "schemathesis: the server exited at startup:" >&2
        cat "$tmp/server.log" >&2
        exit 1
    fi
    addr="$(sed 's/\x1b\[[0-9;]*m//g' "$tmp/server.log" |
        grep -oE 'listening.*addr=127\.0\.0\.1:[0-9]+' | grep -oE '127\.0\.0\.1:[0-9]+' | head -n1 || true)"
    if [[ -n "$addr" ]] && curl -fsS -o /dev/null "http://$addr/readyz" 2>/dev/null; then
        base="http://$addr"
        break
    fi
    sleep 0.1
done
if [[ -z "$base" ]]; then
    echo "schemathesis: the server did not become ready within 30 s:" >&2
    cat "$tmp/server.log" >&2
    exit 1
fi

# ---- seed: a user and an admin, each with a platform and some earnings ----
json_get() { # python expression over `v` (the JSON on stdin)
    "$py" -c 'import json, sys; v = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}
api() { # method path token [body] -> response body; fails on a non-2xx status
    local method=$1 path=$2 token=$3 body=${4:-}
    local args=(-fsS -X "$method" "$base$path")
    [[ -n "$token" ]] && args+=(-H "Authorization: Bearer $token")
    [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' -d "$body")
    curl "${args[@]}"
}

declare -A token user_id platform_id earning_ids expense_ids invoice_ids notification_ids
for role in user admin; do
    session="$(api POST /api/auth/register "" \
        "{\"email\":\"schema-$role@example.com\",\"password\":\"schema-$role-password\",\"name\":\"Schema $role\"}")"
    token[$role]="$(json_get 'v["token"]' <<<"$session")"
    user_id[$role]="$(json_get 'v["user"]["id"]' <<<"$session")"
    if [[ $role == admin ]]; then
        # Registration never makes an admin: the operator's command does.
        DATABASE_URL="sqlite://$tmp/schemathesis.db" "$bin" admin grant "schema-$role@example.com" >/dev/null
        session="$(api POST /api/auth/refresh "${token[$role]}")"
        token[$role]="$(json_get 'v["token"]' <<<"$session")"
    fi
    [[ "$(json_get 'v["user"]["role"]' <<<"$session")" == "$role" ]] || {
        echo "schemathesis: schema-$role@example.com did not get the role $role" >&2
        exit 1
    }
    platform_id[$role]="$(api POST /api/platforms "${token[$role]}" \
        "{\"name\":\"Upwork ($role)\",\"color\":\"#14a800\"}" | json_get 'v["id"]')"
    ids=()
    for i in 1 2 3 4 5 6; do
        ids+=("$(api POST /api/earnings "${token[$role]}" \
            "{\"platformId\":\"${platform_id[$role]}\",\"date\":\"2024-01-1$i\",\"hours\":$i.5,\"amount\":${i}00.25,\"notes\":\"seed $i\"}" |
            json_get 'v["id"]')")
    done
    earning_ids[$role]="${ids[*]}"
    ids=()
    for i in 1 2 3; do
        ids+=("$(api POST /api/expenses "${token[$role]}" \
            "{\"platformId\":\"${platform_id[$role]}\",\"date\":\"2024-02-0$i\",\"amount\":$i.25,\"category\":\"seed\"}" |
            json_get 'v["id"]')")
    done
    expense_ids[$role]="${ids[*]}"
    ids=()
    for status in draft sent; do
        ids+=("$(api POST /api/invoices "${token[$role]}" \
            "{\"number\":\"SEED-$status\",\"client\":\"Acme\",\"issueDate\":\"2024-01-01\",\"dueDate\":\"2099-01-31\",\"amount\":1200,\"status\":\"$status\"}" |
            json_get 'v["id"]')")
    done
    invoice_ids[$role]="${ids[*]}"
    # Each creation also stored a notification.
    notification_ids[$role]="$(api GET /api/notifications "${token[$role]}" |
        json_get '" ".join(n["id"] for n in v["items"])')"
done

# Schemathesis draws these ids half of the time where the document asks for
# one (the rest is generated), so requests also reach real rows: earnings
# with a valid platform, reads and updates of existing earnings, admin calls
# on existing users.
toml_list() { # words -> ["a", "b"]
    local out="" w
    for w in "$@"; do out+="${out:+, }\"$w\""; done
    echo "[$out]"
}
write_config() { # role file
    local role=$1
    # shellcheck disable=SC2086 # the id lists are space-separated words
    cat >"$2" <<TOML
# Written by tests/schemathesis/run.sh for the $role run.
# Each run starts from a fresh server and database: nothing to carry over.
[cache]
enabled = false

[dictionaries.platform]
values = $(toml_list "${platform_id[$role]}")

[dictionaries.earning]
values = $(toml_list ${earning_ids[$role]})

[dictionaries.expense]
values = $(toml_list ${expense_ids[$role]})

[dictionaries.invoice]
values = $(toml_list ${invoice_ids[$role]})

[dictionaries.notification]
values = $(toml_list ${notification_ids[$role]})

[dictionaries.user]
values = $(toml_list "${user_id[user]}" "${user_id[admin]}")

# Edge cases of YYYY-MM-DD: leap day, first and last 4-digit years, and
# signed or short years that a date parser may take but must not store.
[dictionaries.date]
values = ["2024-02-29", "0000-01-01", "9999-12-31", "-001-01-01", "+001-01-01", "2024-1-015"]

[parameters]
"body.platformId" = { dictionary = "platform", probability = 0.5 }
"body.date" = { dictionary = "date", probability = 0.2 }
"query.platformId" = { dictionary = "platform", probability = 0.5 }
"body.issueDate" = { dictionary = "date", probability = 0.2 }
"body.dueDate" = { dictionary = "date", probability = 0.2 }
"body.userIds[*]" = { dictionary = "user", probability = 0.5 }
"body.target.user" = { dictionary = "user", probability = 0.5 }
"body.target.users[*]" = { dictionary = "user", probability = 0.5 }

[[operations]]
include-path-regex = "^/api/earnings/"
parameters = { "path.id" = { dictionary = "earning", probability = 0.5 } }

[[operations]]
include-path-regex = "^/api/expenses/"
parameters = { "path.id" = { dictionary = "expense", probability = 0.5 } }

[[operations]]
include-path-regex = "^/api/invoices/"
parameters = { "path.id" = { dictionary = "invoice", probability = 0.5 } }

[[operations]]
include-path = "/api/notifications/{id}/read"
parameters = { "path.id" = { dictionary = "notification", probability = 0.5 } }

[[operations]]
include-path-regex = "^/api/admin/"
parameters = { "path.id" = { dictionary = "user", probability = 0.5 }, "path.user" = { dictionary = "user", probability = 0.5 } }
TOML
}

# ---- schemathesis, once per role ----
checks="${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}"
phases="${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}"
run_as() { # role [schemathesis filter args...]
    local role=$1
    shift
    write_config "$role" "$tmp/$role.toml"
    echo "== schemathesis as $role ($base, seed $seed, at most $max_examples examples per operation and phase)"
    # From the temp folder, so nothing lands in the work tree. In the
    # background and waited for, so that a signal to this script is handled
    # at once (and the cleanup ends schemathesis too).
    (cd "$tmp" && exec "$venv/bin/schemathesis" --config-file "$tmp/$role.toml" run "$base/api/openapi.json" \
        --header "Authorization: Bearer ${token[$role]}" \
        --exclude-path /events/poll \
        "$@" \
        --checks "$checks" \
        --phases "$phases" \
        --seed "$seed" \
        --max-examples "$max_examples" \
        --workers "$workers" \
        --generation-database none \
        --request-timeout 10 \
        --report junit,json \
        --report-junit-path "$tmp/$role.junit.xml" \
        --report-json-path "$tmp/$role.json" \
        --no-color) &
    schemathesis_pid=$!
    local status=0
    wait "$schemathesis_pid" || status=$?
    schemathesis_pid=""
    return "$status"
}

# Logout-everywhere and a password change revoke the token the run is
# authenticated with: they are tested last, on their own, as the user.
revoking=(--include-path /api/auth/logout-all --include-path /api/auth/password)
status=0
run_as user --exclude-path /api/auth/logout-all --exclude-path /api/auth/password || status=1
run_as admin --exclude-path /api/auth/logout-all --exclude-path /api/auth/password || status=1
cp "$tmp/user.json" "$tmp/user-main.json" 2>/dev/null || true
run_as user "${revoking[@]}" || status=1

# One line for humans, from both runs' JSON reports.
summary="$("$py" - "$tmp/user-main.json" "$tmp/admin.json" "$tmp/user.json" <<'PY'
import json, sys
operations, cases, failures, errors = 0, 0, 0, 0
for path in sys.argv[1:]:
    try:
        report = json.load(open(path))
    except (OSError, ValueError):
        errors += 1
        continue
    operations = max(operations, report["operations"]["tested"])
    cases += report["test_cases"]["generated"]
    failures += report["test_cases"]["unique_failures"]
    errors += len(report["errors"])
line = f"schemathesis: {operations} operations, {cases} test cases (user, admin, then the revoking routes), {failures} failures"
if errors:
    line += f", {errors} errors"
print(line)
PY
)"
if grep -qE 'panicked|internal error' "$tmp/server.log"; then
    echo "== server log (errors):"
    grep -E 'panicked|internal error' "$tmp/server.log" | sed 's/\x1b\[[0-9;]*m//g' | head -20
    status=1
fi
echo "== took $((SECONDS - started)) s"
echo "$summary"
exit $status
