#!/usr/bin/env bash
# API fuzzing from the OpenAPI document: schemathesis generates requests for every
# operation in /openapi.json (valid and invalid bodies, paths, queries) and checks that
# the server never answers 5xx and never crashes.
#
#   scripts/fuzz-api.sh [--max-examples N] [--max-time SECONDS] [--seed N] [--workers N]
#                       [--checks LIST] [--no-build] [--keep]
#
# Installs schemathesis from PyPI into a virtualenv under the cache dir
# ($XDG_CACHE_HOME or ~/.cache, /strategist/schemathesis-venv) on first use; builds the
# debug binary (honours CARGO_TARGET_DIR; STRATEGIST_BIN skips the build); creates a
# temporary SQLite store, migrates it, applies experiments/, creates an `admin` and an
# `assign` key, and starts `strategist serve` on a free loopback port. Then two runs:
# the `assign` key against /v1/assign*, /v1/rewards* and /v1/events*, the `admin` key against every
# other operation (an admin key may not assign, so one key would only ever test 403s
# there). Each run is bounded by --max-examples per operation (default 50); --max-time
# instead keeps fuzzing until that many seconds are spent (schemathesis repeats its
# fuzzing phase within a time budget). Afterwards the server must still be alive and its log
# must hold no panic. Exits non-zero on any finding; the reports (JUnit, a pytest file
# that replays each failure, the server log) are copied to reports/fuzz-api/ when
# anything failed, or always with --keep.
#
# --checks defaults to `not_a_server_error`; `--checks all` adds schemathesis's
# conformance checks (status codes and response schemas against the document).
# Environment: STRATEGIST_BIN, CARGO_TARGET_DIR, SCHEMATHESIS_VERSION (">=4,<5").
set -euo pipefail

MAX_EXAMPLES=50
MAX_TIME=""
SEED=""
WORKERS=1
CHECKS=not_a_server_error
BUILD=1
KEEP=0

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --max-examples) MAX_EXAMPLES=$2; shift 2 ;;
        --max-time) MAX_TIME=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --checks) CHECKS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "==> $*" >&2; }
for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done

# ------------------------------------------------------------------ schemathesis
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/strategist/schemathesis-venv
ST=$VENV/bin/schemathesis
if [ ! -x "$ST" ]; then
    log "installing schemathesis into $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q "schemathesis${SCHEMATHESIS_VERSION:->=4,<5}" >&2
fi
log "$("$ST" --version)"

# ------------------------------------------------------------------ binary
if [ -n "${STRATEGIST_BIN:-}" ]; then
    BIN=$STRATEGIST_BIN
else
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    if [ "$BUILD" = 1 ]; then
        log "cargo build --bin strategist (target dir $TARGET_DIR)"
        cargo build --bin strategist
    fi
    BIN=$TARGET_DIR/debug/strategist
fi
[ -x "$BIN" ] || { echo "no binary at $BIN (build it or set STRATEGIST_BIN)" >&2; exit 1; }

# ------------------------------------------------------------------ store, server, cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strategist-fuzz-api.XXXXXX")
SERVER_PID=""
FINDINGS=()

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    local rc=$?
    stop_server
    if [ "$rc" != 0 ] || [ "$KEEP" = 1 ]; then
        mkdir -p reports/fuzz-api
        cp -r "$WORK"/report-* "$WORK/server.log" reports/fuzz-api/ 2>/dev/null || true
        echo "reports and the server log: reports/fuzz-api/" >&2
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DATABASE_URL="sqlite://$WORK/strategist.db"
export DATABASE_URL
log "store: $DATABASE_URL"
"$BIN" migrate --database-url "$DATABASE_URL" >/dev/null
"$BIN" experiments apply experiments --database-url "$DATABASE_URL" >/dev/null
ADMIN_KEY=$("$BIN" keys create --scope admin --name fuzz-admin --database-url "$DATABASE_URL" | tail -n 1)
ASSIGN_KEY=$("$BIN" keys create --scope assign --name fuzz-assign --database-url "$DATABASE_URL" | tail -n 1)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
log "starting strategist serve on $BASE"
# Short intervals: definitions the fuzzer creates also go through the learner and analyzer.
RUST_BACKTRACE=1 "$BIN" serve --database-url "$DATABASE_URL" --bind "127.0.0.1:$PORT" \
    --learner-interval 2s --analyzer-interval 5s --analyzer-margin 0s >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 1 300); do
    if curl -fsS "$BASE/readyz" >/dev/null 2>&1; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited" >&2; tail -n 20 "$WORK/server.log" >&2; exit 1; }
    [ "$i" = 300 ] && { echo "the server did not become ready in 30 s" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "$BASE/openapi.json" >"$WORK/openapi.json"

# ------------------------------------------------------------------ schemathesis runs
# run_st NAME KEY FILTER...: one schemathesis run; appends to FINDINGS when it fails.
run_st() {
    local name=$1 key=$2; shift 2
    local args=(run "$BASE/openapi.json" --url "$BASE"
        -H "Authorization: Bearer $key"
        --checks "$CHECKS" --max-examples "$MAX_EXAMPLES"
        --workers "$WORKERS" --request-timeout 30 --continue-on-failure
        --generation-database none --suppress-health-check all
        --report junit,pytest --report-dir "$WORK/report-$name" --no-color "$@")
    [ -n "$SEED" ] && args+=(--seed "$SEED")
    [ -n "$MAX_TIME" ] && args+=(--max-time "$MAX_TIME")
    log "schemathesis ($name): $*, ≤ $MAX_EXAMPLES examples per operation${MAX_TIME:+, ${MAX_TIME}s}"
    local rc=0
    # The cwd is $WORK so schemathesis's own files never land in the repository.
    (cd "$WORK" && "$ST" "${args[@]}") >"$WORK/st-$name.txt" 2>&1 || rc=$?
    grep -v '^[[:space:]]*$' "$WORK/st-$name.txt" | tail -n 40 >&2 || true
    [ "$rc" = 0 ] || FINDINGS+=("schemathesis ($name) exited $rc")
    kill -0 "$SERVER_PID" 2>/dev/null || FINDINGS+=("the server died during the $name run")
}

run_st decisions "$ASSIGN_KEY" --include-path-regex '^/v1/(assign|rewards|events)'
kill -0 "$SERVER_PID" 2>/dev/null && run_st admin "$ADMIN_KEY" --exclude-path-regex '^/v1/(assign|rewards|events)'

# ------------------------------------------------------------------ crash checks
if kill -0 "$SERVER_PID" 2>/dev/null; then
    curl -fsS "$BASE/readyz" >/dev/null 2>&1 || FINDINGS+=("/readyz fails after the runs")
else
    FINDINGS+=("the server is not running after the runs")
fi
stop_server
if grep -n -m 5 -E 'panicked|RUST_BACKTRACE|stack backtrace' "$WORK/server.log" >&2; then
    FINDINGS+=("the server log holds a panic (above)")
fi
ERRORS=$(grep -c '"internal error"\|internal error' "$WORK/server.log" || true)
[ "$ERRORS" = 0 ] || FINDINGS+=("the server logged $ERRORS internal error(s)")

TOTAL=$(cat "$WORK"/st-*.txt | awk '$2 == "generated," { s += $1 } END { print s + 0 }')
if [ ${#FINDINGS[@]} -gt 0 ]; then
    printf 'FINDING: %s\n' "${FINDINGS[@]}" >&2
    exit 1
fi
echo "fuzz-api: ok ($TOTAL test cases generated; no 5xx, no crash, no panic in the log)"
