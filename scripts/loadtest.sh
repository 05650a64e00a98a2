#!/usr/bin/env bash
# Load test: `/v1/assign` next to the ceiling (`GET /healthz`) of the same server, measured
# in the same run with wrk on loopback. See docs/performance.md for results and analysis.
#
#   scripts/loadtest.sh [--backend postgres|sqlite] [--duration SECONDS] [--connections N]
#                       [--runs N] [--warmup SECONDS] [--out FILE] [--no-build]
#                       [--no-verify-ids] [--verify-seconds N] [--rewards-seconds N]
#                       [--wait-idle SECONDS]
#                       [-- EXTRA SERVE FLAGS...]
#
# Builds the release binary (honours CARGO_TARGET_DIR), creates a fresh store (a new
# Postgres database on 127.0.0.1:5432 as user postgres, or a temporary SQLite file),
# migrates it, applies experiments/, creates an `assign` key, starts `strategist serve`,
# then for each run: wrk on /healthz (the ceiling), wrk on /v1/assign (scripts/assign.lua:
# a mix of the three example experiments). Prints throughput and latency percentiles for
# both, the ratio, non-2xx counts, the writer's group-commit figures from /metrics, and
# checks the log two ways: the rows in `exposures` equal the logged decisions the server
# counted (it counts after the commit, before answering), and, in a separate run at the
# end whose answers wrk parses (--verify-seconds, default 5), every exposure id returned
# by a logged answer is stored. The measured runs do not parse answers in Lua, so the load
# generator costs about as much per request as it does for the ceiling. Then, against the
# exposures of that verification run, it drives `POST /v1/rewards` (scripts/rewards.lua,
# --rewards-seconds, default 10; 0 skips it) and checks that the rows in `rewards` equal
# the rewards the server acknowledged as stored.
# Before each measured wrk run it waits (up to --wait-idle seconds, default 60) for a
# second in which other processes use under 0.2 cores, since wrk and the server share the
# machine; the report gives, per run, the CPU other processes took anyway.
# Everything it created (server, database, files) is removed on exit.
#
# Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), WRK_THREADS (1),
# STRATEGIST_BIN (skip the build and use this binary).
set -euo pipefail

BACKEND=postgres
DURATION=15
CONNECTIONS=64
RUNS=1
WARMUP=3
OUT=""
BUILD=1
VERIFY_IDS=1
VERIFY_SECONDS=5
REWARDS_SECONDS=10
WAIT_IDLE=60
EXTRA=()
THREADS=${WRK_THREADS:-1}

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --backend) BACKEND=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-verify-ids) VERIFY_IDS=0; shift ;;
        --verify-seconds) VERIFY_SECONDS=$2; shift 2 ;;
        --rewards-seconds) REWARDS_SECONDS=$2; shift 2 ;;
        --wait-idle) WAIT_IDLE=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$BACKEND" in postgres|sqlite) ;; *) echo "--backend must be postgres or sqlite" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { echo "==> $*" >&2; }

# ------------------------------------------------------------------ tools and binary
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
for tool in curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done

if [ -n "${STRATEGIST_BIN:-}" ]; then
    BIN=$STRATEGIST_BIN
else
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    if [ "$BUILD" = 1 ]; then
        log "cargo build --release (target dir $TARGET_DIR)"
        cargo build --release --bin strategist
    fi
    BIN=$TARGET_DIR/release/strategist
fi
[ -x "$BIN" ] || { echo "no binary at $BIN (build it or set STRATEGIST_BIN)" >&2; exit 1; }

# ------------------------------------------------------------------ store and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strategist-load.XXXXXX")
SERVER_PID=""
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER
DB_NAME=""

stop_server() { # SIGTERM: graceful, in-flight requests finish and their exposures commit
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
    if [ -n "$DB_NAME" ]; then
        dropdb --if-exists "$DB_NAME" 2>/dev/null || true
    fi
    if [ "$rc" != 0 ] && [ -f "$WORK/server.log" ]; then
        echo "---- last lines of the server log" >&2
        tail -n 20 "$WORK/server.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "loadtest.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

if [ "$BACKEND" = postgres ]; then
    command -v psql >/dev/null 2>&1 || { echo "psql/createdb are required for --backend postgres" >&2; exit 1; }
    DB_NAME="strategist_load_$$"
    createdb "$DB_NAME"
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
    sql() { psql -X -q -t -A -d "$DB_NAME" -c "$1"; }
else
    command -v sqlite3 >/dev/null 2>&1 || { echo "sqlite3 is required for --backend sqlite" >&2; exit 1; }
    DATABASE_URL="sqlite://$WORK/strategist.db"
    sql() { sqlite3 -cmd ".timeout 30000" "$WORK/strategist.db" "$1"; }
fi
export DATABASE_URL

log "store: $BACKEND ($DATABASE_URL)"
"$BIN" migrate --database-url "$DATABASE_URL" >/dev/null
"$BIN" experiments apply experiments --database-url "$DATABASE_URL" >&2
"$BIN" keys create --scope assign --name loadtest --database-url "$DATABASE_URL" >"$WORK/key.txt" 2>"$WORK/key.err" || {
    rc=$?; echo "keys create failed (exit $rc):" >&2; cat "$WORK/key.err" >&2; exit 1; }
KEY=$(tail -n 1 "$WORK/key.txt")
export STRATEGIST_KEY=$KEY

# ------------------------------------------------------------------ server
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000)))
BASE="http://127.0.0.1:$PORT"
log "starting strategist serve on $BASE ${EXTRA[*]:-}"
"$BIN" serve --database-url "$DATABASE_URL" --bind "127.0.0.1:$PORT" ${EXTRA[@]+"${EXTRA[@]}"} \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 1 300); do
    if curl -fsS "$BASE/readyz" >/dev/null 2>&1; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited" >&2; exit 1; }
    [ "$i" = 300 ] && { echo "the server did not become ready in 30 s" >&2; exit 1; }
    sleep 0.1
done

# A smoke request: the key and the experiments work.
curl -fsS -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"experiment":"checkout-offer","unit_id":"smoke","context":{"device":"mobile"}}' \
    "$BASE/v1/assign" >"$WORK/smoke.json" || { echo "smoke /v1/assign failed" >&2; exit 1; }
grep -q '"logged":true' "$WORK/smoke.json" || { echo "the smoke /v1/assign was not logged: $(cat "$WORK/smoke.json")" >&2; exit 1; }

# ------------------------------------------------------------------ wrk helpers
cat >"$WORK/ceiling.lua" <<'LUA'
-- Only a summary: no per-request Lua, so wrk runs its plain static-request path.
function done(summary, latency, requests)
   local e = summary.errors
   local line = string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d non2xx=%d socket_errors=%d logged=0 unlogged=0 other=0",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max,
      e.status, e.connect + e.read + e.write + e.timeout)
   io.write(line, "\n")
end
LUA

mkdir -p "$WORK/ids"

# CPU accounting (clock ticks): the server process (all threads), every Postgres process,
# and the whole machine (busy = all but idle and iowait), so each run also says how much
# CPU a request costs where, and how much CPU other processes took meanwhile.
TICK=$(getconf CLK_TCK 2>/dev/null || echo 100)
proc_ticks() { awk '{ s += $14 + $15 } END { print s + 0 }' "$@" 2>/dev/null || echo 0; }
server_ticks() { proc_ticks "/proc/$SERVER_PID/stat"; }
pg_ticks() {
    local pids
    pids=$(pgrep -u postgres 2>/dev/null | sed 's|.*|/proc/&/stat|') || true
    [ -n "$pids" ] && proc_ticks $pids || echo 0
}
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

wait_idle() { # up to WAIT_IDLE seconds for a quiet second (our server is idle between runs)
    local deadline=$((SECONDS + WAIT_IDLE)) m0 m1
    while [ "$SECONDS" -lt "$deadline" ]; do
        m0=$(busy_ticks); sleep 1; m1=$(busy_ticks)
        if [ $((m1 - m0)) -lt $((TICK / 5)) ]; then return 0; fi
    done
    log "the machine did not become idle in ${WAIT_IDLE}s; measuring anyway (see the 'other load' column)"
}

# wrk_run NAME SECONDS ARGS... -> prints the RESULT line (wrk's full output goes to $WORK/NAME.txt)
# with CPU figures appended: server_us, db_us, wrk_us (CPU µs per request) and other_cores.
wrk_run() {
    local name=$1 secs=$2; shift 2
    local s0 p0 m0 s1 p1 m1 t0 t1 line
    s0=$(server_ticks); p0=$(pg_ticks); m0=$(busy_ticks); t0=$(date +%s.%N)
    ( ASSIGN_IDS_DIR=${WRK_IDS_DIR:-} wrk -t "$THREADS" -c "$CONNECTIONS" -d "${secs}s" --latency --timeout 10s "$@" \
        && times ) >"$WORK/$name.txt" 2>&1 || { cat "$WORK/$name.txt" >&2; echo "wrk failed" >&2; exit 1; }
    s1=$(server_ticks); p1=$(pg_ticks); m1=$(busy_ticks); t1=$(date +%s.%N)
    line=$(grep '^RESULT ' "$WORK/$name.txt" | tail -n 1)
    # `times`: second line = children's user and system time (wrk), e.g. "0m1.230s 0m2.100s".
    local wrk_s
    wrk_s=$(tail -n 1 "$WORK/$name.txt" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } print n }')
    awk -v line="$line" -v n="$(field "$line" requests)" -v tick="$TICK" -v s="$((s1 - s0))" -v p="$((p1 - p0))" \
        -v m="$((m1 - m0))" -v w="$wrk_s" -v t0="$t0" -v t1="$t1" 'BEGIN {
            n = (n > 0) ? n : 1
            other = (m / tick - s / tick - p / tick - w) / (t1 - t0)
            printf "%s server_us=%.1f db_us=%.1f wrk_us=%.1f other_cores=%.2f\n", line,
                1e6 * s / tick / n, 1e6 * p / tick / n, 1e6 * w / n, (other > 0 ? other : 0)
        }'
}
field() { # field LINE NAME
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"
}
metric() { # metric NAME: sum of the unlabelled sample(s) of NAME on /metrics
    curl -fsS "$BASE/metrics" | awk -v n="$1" '$1 == n { s += $2 } END { printf "%.9f\n", s + 0 }'
}
metric_all() { # metric_all NAME: sum over every labelled series of NAME on /metrics
    curl -fsS "$BASE/metrics" | awk -v n="$1" 'index($1, n "{") == 1 || $1 == n { s += $2 } END { printf "%.0f\n", s + 0 }'
}
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
hist() { # hist NAME: "LE COUNT" lines of histogram NAME, summed over its labelled series
    curl -fsS "$BASE/metrics" | awk -v n="$1_bucket{" 'index($1, n) == 1 {
        match($1, /le="[^"]*"/); le = substr($1, RSTART + 4, RLENGTH - 5); c[le] += $2
    } END { for (le in c) print le, c[le] }' | sort -g
}
hist_quantile() { # hist_quantile Q BEFORE AFTER: quantile (ms) of the observations between two hist snapshots,
    # interpolated linearly inside the bucket, as Prometheus' histogram_quantile does
    join <(sort -k1,1 <<<"$2") <(sort -k1,1 <<<"$3") | sort -g | awk -v q="$1" '
        { le[NR] = $1; n[NR] = $3 - $2 } END {
            total = n[NR]; if (total <= 0) { print "–"; exit }
            want = q * total; lo = 0; prev = 0
            for (i = 1; i <= NR; i++) {
                if (n[i] >= want) {
                    if (le[i] == "+Inf") { printf "> %.1f", lo * 1000; exit }
                    printf "%.2f", 1000 * (lo + (le[i] - lo) * (want - prev) / ((n[i] - prev) > 0 ? n[i] - prev : 1)); exit
                }
                lo = le[i]; prev = n[i]
            }
        }'
}

TOTAL_NON2XX=0
WRK_RUNS=0
ROWS=()
CEIL_RPS=(); ASSIGN_RPS=(); RATIOS=(); ASSIGN_P99=(); CEIL_P99=(); CEIL_CPU=(); ASSIGN_SRV=(); ASSIGN_DB=(); OTHER=(); SERVER_P99=()

record() { # record RUN WHAT RESULT_LINE
    local run=$1 what=$2 line=$3
    ROWS+=("$run|$what|$(field "$line" rps)|$(ms "$(field "$line" p50_us)")|$(ms "$(field "$line" p90_us)")|$(ms "$(field "$line" p99_us)")|$(ms "$(field "$line" p999_us)")|$(field "$line" non2xx)|$(field "$line" socket_errors)|$(field "$line" logged)|$(field "$line" unlogged)|$(field "$line" server_us)|$([ "$BACKEND" = postgres ] && field "$line" db_us || echo "–")|$(field "$line" wrk_us)|$(field "$line" other_cores)")
}

if [ "$WARMUP" -gt 0 ]; then
    log "warm-up: ${WARMUP}s of /healthz and ${WARMUP}s of /v1/assign"
    wrk_run warm-ceiling "$WARMUP" -s "$WORK/ceiling.lua" "$BASE/healthz" >/dev/null
    line=$(wrk_run warm-assign "$WARMUP" -s scripts/assign.lua "$BASE/v1/assign")
    TOTAL_NON2XX=$((TOTAL_NON2XX + $(field "$line" non2xx)))
    WRK_RUNS=$((WRK_RUNS + 1))
fi

BATCH_SUM=0; BATCH_COUNT=0; COMMIT_SUM=0
for run in $(seq 1 "$RUNS"); do
    log "run $run/$RUNS: GET /healthz, ${DURATION}s, $CONNECTIONS connections, $THREADS wrk thread(s)"
    wait_idle
    ceil=$(wrk_run "ceiling-$run" "$DURATION" -s "$WORK/ceiling.lua" "$BASE/healthz")
    echo "  ceiling: $ceil" >&2
    b0=$(metric strategist_writer_batch_size_sum); n0=$(metric strategist_writer_batch_size_count)
    c0=$(metric strategist_writer_commit_seconds_sum)
    l0=$(metric_all strategist_decisions_total); u0=$(metric_all strategist_unlogged_decisions_total)
    h0=$(hist strategist_decision_duration_seconds)
    log "run $run/$RUNS: POST /v1/assign, ${DURATION}s, $CONNECTIONS connections"
    wait_idle
    asg=$(wrk_run "assign-$run" "$DURATION" -s scripts/assign.lua "$BASE/v1/assign")
    echo "  assign:  $asg" >&2
    b1=$(metric strategist_writer_batch_size_sum); n1=$(metric strategist_writer_batch_size_count)
    c1=$(metric strategist_writer_commit_seconds_sum)
    l1=$(metric_all strategist_decisions_total); u1=$(metric_all strategist_unlogged_decisions_total)
    h1=$(hist strategist_decision_duration_seconds)
    SERVER_P99+=("$(hist_quantile 0.99 "$h0" "$h1")")
    # The answers were not parsed in Lua: logged / unlogged as the server counted them.
    asg=$(sed -e "s/ logged=[0-9]*/ logged=$((l1 - l0))/" -e "s/ unlogged=[0-9]*/ unlogged=$((u1 - u0))/" <<<"$asg")
    BATCH_SUM=$(awk -v a="$BATCH_SUM" -v d="$b0" -v e="$b1" 'BEGIN { printf "%.0f", a + e - d }')
    BATCH_COUNT=$(awk -v a="$BATCH_COUNT" -v d="$n0" -v e="$n1" 'BEGIN { printf "%.0f", a + e - d }')
    COMMIT_SUM=$(awk -v a="$COMMIT_SUM" -v d="$c0" -v e="$c1" 'BEGIN { printf "%.9f", a + e - d }')
    TOTAL_NON2XX=$((TOTAL_NON2XX + $(field "$asg" non2xx) + $(field "$ceil" non2xx)))
    WRK_RUNS=$((WRK_RUNS + 1))
    record "$run" "GET /healthz (ceiling)" "$ceil"
    record "$run" "POST /v1/assign" "$asg"
    CEIL_RPS+=("$(field "$ceil" rps)"); ASSIGN_RPS+=("$(field "$asg" rps)")
    CEIL_P99+=("$(field "$ceil" p99_us)"); ASSIGN_P99+=("$(field "$asg" p99_us)")
    CEIL_CPU+=("$(awk -v a="$(field "$ceil" server_us)" -v b="$(field "$ceil" db_us)" 'BEGIN { print a + b }')")
    ASSIGN_SRV+=("$(field "$asg" server_us)"); ASSIGN_DB+=("$(field "$asg" db_us)"); OTHER+=("$(field "$asg" other_cores)" "$(field "$ceil" other_cores)")
    RATIOS+=("$(awk -v a="$(field "$asg" rps)" -v c="$(field "$ceil" rps)" 'BEGIN { printf "%.3f", a / c }')")
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ------------------------------------------------------------------ exposures check
# The server answers only after the exposure's group commit, so every exposure id that wrk
# saw is stored. Rows beyond the logged answers are requests still in flight when wrk
# stopped (stored, answer never read): at most one per connection per wrk run.
VERIFY_LINE=""
if [ "$VERIFY_IDS" = 1 ] && [ "$VERIFY_SECONDS" -gt 0 ]; then
    log "verification run: ${VERIFY_SECONDS}s of /v1/assign with every answer parsed and its exposure id kept"
    VERIFY_LINE=$(WRK_IDS_DIR="$WORK/ids" wrk_run verify "$VERIFY_SECONDS" -s scripts/assign.lua "$BASE/v1/assign")
    TOTAL_NON2XX=$((TOTAL_NON2XX + $(field "$VERIFY_LINE" non2xx)))
    WRK_RUNS=$((WRK_RUNS + 1))
fi
REWARDS_LINE=""
if [ -n "$VERIFY_LINE" ] && [ "$REWARDS_SECONDS" -gt 0 ]; then
    cat "$WORK"/ids/*.txt >"$WORK/reward-ids.txt"
    log "POST /v1/rewards, ${REWARDS_SECONDS}s, $CONNECTIONS connections, against the verification run's exposures"
    wait_idle
    REWARDS_LINE=$(REWARD_IDS="$WORK/reward-ids.txt" wrk_run rewards "$REWARDS_SECONDS" -s scripts/rewards.lua "$BASE/v1/rewards")
    echo "  rewards: $REWARDS_LINE" >&2
    TOTAL_NON2XX=$((TOTAL_NON2XX + $(field "$REWARDS_LINE" non2xx)))
fi
SERVER_REWARDS=$(curl -fsS "$BASE/metrics" | awk 'index($1, "strategist_rewards_total{") == 1 && $1 ~ /outcome="stored"/ { s += $2 } END { printf "%.0f\n", s + 0 }')
SERVER_LOGGED=$(metric_all strategist_decisions_total)
log "stopping the server (graceful) before counting"
stop_server
STORED=$(sql "SELECT count(*) FROM exposures" | tr -d '[:space:]')
STORED_REWARDS=$(sql "SELECT count(*) FROM rewards" | tr -d '[:space:]')
MISSING="not checked"
if [ "$VERIFY_IDS" = 1 ]; then
    cat "$WORK"/ids/*.txt 2>/dev/null | awk '{ print $1 }' | sort -u >"$WORK/returned-ids.txt" || true
    RETURNED=$(wc -l <"$WORK/returned-ids.txt" | tr -d ' ')
    if [ "$BACKEND" = postgres ]; then
        MISSING=$(psql -X -q -t -A -d "$DB_NAME" \
            -c "CREATE TEMP TABLE seen(id text)" \
            -c "\\copy seen FROM '$WORK/returned-ids.txt'" \
            -c "SELECT count(*) FROM seen s WHERE NOT EXISTS (SELECT 1 FROM exposures e WHERE e.id = s.id)" | tail -n 1)
    else
        MISSING=$(sqlite3 -cmd ".timeout 30000" "$WORK/strategist.db" \
            "CREATE TEMP TABLE seen(id TEXT);" ".mode csv" ".import $WORK/returned-ids.txt seen" \
            "SELECT count(*) FROM seen s WHERE NOT EXISTS (SELECT 1 FROM exposures e WHERE e.id = s.id);" | tail -n 1)
    fi
    [ "$RETURNED" -eq "$(field "$VERIFY_LINE" logged)" ] || echo "warning: $RETURNED ids written, $(field "$VERIFY_LINE" logged) logged answers parsed" >&2
fi
CHECK=ok
if [ "$MISSING" != "not checked" ] && [ "$MISSING" != 0 ]; then CHECK="FAILED: $MISSING returned exposure ids are not stored"; fi
if [ "$STORED" != "$SERVER_LOGGED" ]; then CHECK="FAILED: $STORED rows in exposures, but the server counted $SERVER_LOGGED logged decisions"; fi
if [ "$STORED_REWARDS" != "$SERVER_REWARDS" ]; then CHECK="FAILED: $STORED_REWARDS rows in rewards, but the server acknowledged $SERVER_REWARDS as stored"; fi

MEAN_BATCH=$(awk -v s="$BATCH_SUM" -v n="$BATCH_COUNT" 'BEGIN { printf "%.1f", n ? s / n : 0 }')
MEAN_COMMIT=$(awk -v s="$COMMIT_SUM" -v n="$BATCH_COUNT" 'BEGIN { printf "%.3f", n ? 1000 * s / n : 0 }')
COMMITS_PER_S=$(awk -v n="$BATCH_COUNT" -v r="$RUNS" -v d="$DURATION" 'BEGIN { printf "%.0f", n / (r * d) }')

# ------------------------------------------------------------------ report
ENV_NOTE=""
for v in ASSIGN_MIX PGSSLMODE WRK_THREADS; do
    [ -n "${!v:-}" ] && ENV_NOTE+="$v=${!v} "
done
CPU=$(awk -F: '/model name/ { sub(/^ /, "", $2); print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)
{
    echo "### $BACKEND: /v1/assign vs ceiling"
    echo
    echo "- command: \`${ENV_NOTE}scripts/loadtest.sh --backend $BACKEND --duration $DURATION --connections $CONNECTIONS --runs $RUNS${EXTRA:+ -- ${EXTRA[*]}}\`"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- machine: $(nproc) CPU ($CPU), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); wrk $THREADS thread, $CONNECTIONS connections, same cores as the server"
    echo
    echo "| run | endpoint | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | non-2xx | socket errors | logged | unlogged | server CPU µs/req | Postgres CPU µs/req | wrk CPU µs/req | other load (cores) |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
    echo
    echo "- server-side decision latency p99 per run (from \`strategist_decision_duration_seconds\`: the handler, from the parsed request to the answer after the commit; without the time a request waits for a worker thread or wrk for the CPU): ${SERVER_P99[*]} ms"
    echo "- /assign ÷ ceiling (throughput), per run: ${RATIOS[*]}; median **$(median "${RATIOS[@]}")** (median req/s: ceiling $(median "${CEIL_RPS[@]}"), assign $(median "${ASSIGN_RPS[@]}"); median p99: ceiling $(ms "$(median "${CEIL_P99[@]}")") ms, assign $(ms "$(median "${ASSIGN_P99[@]}")") ms)"
    echo "- CPU per request (median): ceiling $(median "${CEIL_CPU[@]}") µs ($([ "$BACKEND" = postgres ] && echo "server + Postgres" || echo server)); /assign $(median "${ASSIGN_SRV[@]}") µs in the server$([ "$BACKEND" = postgres ] && echo " + $(median "${ASSIGN_DB[@]}") µs in Postgres" || echo " (SQLite runs inside it)"). Other processes on the machine took $(median "${OTHER[@]}") cores (median over the runs; > 0 means the figures are disturbed)"
    echo "- log writer during /assign: $BATCH_COUNT group commits (~$COMMITS_PER_S/s), mean batch $MEAN_BATCH exposures, mean commit $MEAN_COMMIT ms"
    if [ -n "$REWARDS_LINE" ]; then
        echo "- POST /v1/rewards (${REWARDS_SECONDS}s, $CONNECTIONS connections, one new reward per request against logged exposures): $(field "$REWARDS_LINE" rps) req/s, p50 $(ms "$(field "$REWARDS_LINE" p50_us)") ms, p90 $(ms "$(field "$REWARDS_LINE" p90_us)") ms, p99 $(ms "$(field "$REWARDS_LINE" p99_us)") ms, p99.9 $(ms "$(field "$REWARDS_LINE" p999_us)") ms; $(field "$REWARDS_LINE" non2xx) non-2xx; server CPU $(field "$REWARDS_LINE" server_us) µs/req$([ "$BACKEND" = postgres ] && echo " + Postgres $(field "$REWARDS_LINE" db_us) µs/req"); ratio to the median ceiling $(awk -v a="$(field "$REWARDS_LINE" rps)" -v c="$(median "${CEIL_RPS[@]}")" 'BEGIN { printf "%.3f", a / c }')"
    fi
    echo "- rewards stored: $STORED_REWARDS rows; acknowledged as stored by the server: $SERVER_REWARDS"
    echo "- non-2xx responses in total: $TOTAL_NON2XX"
    echo "- exposures stored: $STORED; logged decisions counted by the server (after each commit, before the answer): $SERVER_LOGGED; verification run: $(field "$VERIFY_LINE" logged) logged answers parsed, returned ids missing from the store: $MISSING → **$CHECK**"
} | tee "$WORK/report.md"
if [ -n "$OUT" ]; then
    cp "$WORK/report.md" "$OUT"
    log "report written to $OUT"
fi
[ "$CHECK" = ok ]
