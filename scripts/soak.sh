#!/usr/bin/env bash
# Soak: `strategist serve` under steady `/v1/assign` load for a long time, with the learner
# and the analyzer running, and the figures that say whether it holds: resident memory at
# the start and the end (sampled every 30 s), the log writer's queue depth, error answers,
# and exposures stored = logged decisions counted by the server.
#
#   scripts/soak.sh [--backend postgres|sqlite] [--minutes 10] [--rate REQ_PER_S]
#                   [--connections 64] [--out FILE] [--no-build]
#
# --rate is the offered load (default: 8000 req/s, about half of what scripts/loadtest.sh
# measures for /assign on Postgres on the 2-core machine). wrk has no fixed-rate mode, so
# scripts/assign.lua's `delay` hook spaces each connection's requests by
# connections / rate; the achieved rate is reported. The learner runs every 10 s and the
# analyzer every 30 s, so both work throughout. Exits non-zero when memory grows by more
# than 25% from the 2-minute mark to the end, the queue grows, any answer is an error, or
# a logged exposure is missing.
#
# Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), STRATEGIST_BIN.
set -euo pipefail

BACKEND=postgres
MINUTES=10
RATE=8000
CONNECTIONS=64
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --backend) BACKEND=$2; shift 2 ;;
        --minutes) MINUTES=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$BACKEND" in postgres|sqlite) ;; *) echo "--backend must be postgres or sqlite" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "==> $*" >&2; }
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

if [ -n "${STRATEGIST_BIN:-}" ]; then
    BIN=$STRATEGIST_BIN
else
    [ "$BUILD" = 1 ] && cargo build --release --bin strategist >&2
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/strategist
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strategist-soak.XXXXXX")
SERVER_PID=""
DB_NAME=""
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    fi
    [ -n "$DB_NAME" ] && dropdb --if-exists "$DB_NAME" 2>/dev/null || true
    [ "$rc" != 0 ] && [ -f "$WORK/server.log" ] && tail -n 20 "$WORK/server.log" >&2
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$BACKEND" = postgres ]; then
    DB_NAME="strategist_soak_$$"
    createdb "$DB_NAME"
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
    sql() { psql -X -q -t -A -d "$DB_NAME" -c "$1"; }
else
    DATABASE_URL="sqlite://$WORK/strategist.db"
    sql() { sqlite3 -cmd ".timeout 30000" "$WORK/strategist.db" "$1"; }
fi
"$BIN" migrate --database-url "$DATABASE_URL" >/dev/null
"$BIN" experiments apply experiments --database-url "$DATABASE_URL" >/dev/null
export STRATEGIST_KEY
STRATEGIST_KEY=$("$BIN" keys create --scope assign --name soak --database-url "$DATABASE_URL" | tail -n 1)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
"$BIN" serve --database-url "$DATABASE_URL" --bind "127.0.0.1:$PORT" --learner-interval 10s \
    --analyzer-interval 30s >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status"; }
metric() { curl -fsS "$BASE/metrics" | awk -v n="$1" 'index($1, n "{") == 1 || $1 == n { s += $2 } END { printf "%.0f\n", s + 0 }'; }

DELAY_MS=$(awk -v c="$CONNECTIONS" -v r="$RATE" 'BEGIN { printf "%.3f", 1000 * c / r }')
log "soak: $BACKEND, ${MINUTES} min, offered ~${RATE} req/s ($CONNECTIONS connections, ${DELAY_MS} ms between a connection's requests)"
START_RSS=$(rss_kib)
( ASSIGN_DELAY_MS=$DELAY_MS wrk -t 1 -c "$CONNECTIONS" -d "$((MINUTES * 60))s" --latency --timeout 10s \
    -s scripts/assign.lua "$BASE/v1/assign" >"$WORK/wrk.txt" 2>&1 ) &
WRK_PID=$!
SAMPLES="$WORK/samples.tsv"
echo -e "second\trss_kib\tqueue_depth\tlogged_decisions\tanalyzer_last_run" >"$SAMPLES"
T0=$SECONDS
while kill -0 "$WRK_PID" 2>/dev/null; do
    echo -e "$((SECONDS - T0))\t$(rss_kib)\t$(metric strategist_writer_queue_depth)\t$(metric strategist_decisions_total)\t$(metric strategist_analyzer_last_run_timestamp_seconds)" >>"$SAMPLES"
    sleep 30
done
wait "$WRK_PID" || { cat "$WORK/wrk.txt" >&2; exit 1; }
END_RSS=$(rss_kib)
LINE=$(grep '^RESULT ' "$WORK/wrk.txt" | tail -n 1)
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }
SERVER_LOGGED=$(metric strategist_decisions_total)
LEARNER_ERRORS=$(grep -ci "learner run failed\|analysis failed\|analyzer run failed" "$WORK/server.log" || true)
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
STORED=$(sql "SELECT count(*) FROM exposures" | tr -d '[:space:]')
ANALYSES=$(sql "SELECT count(*) FROM analyses" | tr -d '[:space:]')

# Memory: from the 2-minute sample (caches warm) to the end.
WARM_RSS=$(awk -F'\t' 'NR > 1 && $1 >= 120 { print $2; exit }' "$SAMPLES")
WARM_RSS=${WARM_RSS:-$START_RSS}
MAX_QUEUE=$(awk -F'\t' 'NR > 1 && $3 > m { m = $3 } END { print m + 0 }' "$SAMPLES")
LAST_QUEUE=$(tail -n 1 "$SAMPLES" | cut -f3)
CHECK=ok
awk -v a="$WARM_RSS" -v b="$END_RSS" 'BEGIN { exit !(b > 1.25 * a) }' && CHECK="FAILED: resident memory grew from $WARM_RSS to $END_RSS KiB"
[ "$(field "$LINE" non2xx)" != 0 ] && CHECK="FAILED: $(field "$LINE" non2xx) error answers"
[ "$(field "$LINE" socket_errors)" != 0 ] && CHECK="FAILED: $(field "$LINE" socket_errors) socket errors"
[ "$STORED" != "$SERVER_LOGGED" ] && CHECK="FAILED: $STORED exposures stored, $SERVER_LOGGED logged decisions counted"
[ "${LAST_QUEUE:-0}" -gt 1000 ] && CHECK="FAILED: the writer queue ends at $LAST_QUEUE"
{
    echo "### soak: $BACKEND, $MINUTES minutes"
    echo
    echo "- command: \`scripts/soak.sh --backend $BACKEND --minutes $MINUTES --rate $RATE --connections $CONNECTIONS\`"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "- achieved: $(field "$LINE" rps) req/s (offered ~$RATE); latency p50 $(awk -v u="$(field "$LINE" p50_us)" 'BEGIN { printf "%.2f", u / 1000 }') ms, p99 $(awk -v u="$(field "$LINE" p99_us)" 'BEGIN { printf "%.2f", u / 1000 }') ms, p99.9 $(awk -v u="$(field "$LINE" p999_us)" 'BEGIN { printf "%.2f", u / 1000 }') ms; $(field "$LINE" non2xx) error answers, $(field "$LINE" socket_errors) socket errors"
    echo "- resident memory: start $START_RSS KiB, at 2 min $WARM_RSS KiB, end $END_RSS KiB"
    echo "- writer queue depth: max $MAX_QUEUE, last $LAST_QUEUE (sampled every 30 s)"
    echo "- exposures stored $STORED = logged decisions counted $SERVER_LOGGED; analyses written $ANALYSES; learner/analyzer errors in the log: $LEARNER_ERRORS"
    echo "- result: **$CHECK**"
    echo
    echo '| second | RSS KiB | queue depth | logged decisions |'
    echo '| ---: | ---: | ---: | ---: |'
    awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$SAMPLES"
} | tee "$WORK/report.md"
[ -n "$OUT" ] && cp "$WORK/report.md" "$OUT"
[ "$CHECK" = ok ]
