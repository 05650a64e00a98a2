#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that take hostile input (cargo fuzz, libFuzzer):
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target of fuzz/ (default: definition_toml and context_json) for SECONDS
# (default 60) and fails if any target crashes (a panic, an overflow, a timeout or OOM).
#   definition_toml  bytes → experiment::definition::from_toml → Definition::validate
#   context_json     bytes → serde_json Map → experiment::context::parse_context, and
#                    bytes → api::assign::AssignRequest
# The working corpus is fuzz/corpus/TARGET (ignored by git), seeded from fuzz/seeds/TARGET
# and fuzz/regressions/TARGET; crashes land in fuzz/artifacts/TARGET. A crash becomes a
# regression: copy the input to fuzz/regressions/TARGET/ and add a test that replays it
# (tests/api/hostile.rs replays every file there through the same calls).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The machine has only stable Rust, so the
# script sets RUSTC_BOOTSTRAP=1 for the nightly-only flags cargo fuzz passes (sanitizer,
# coverage instrumentation); the fuzz crate builds in its own target dir (fuzz/target).
#
# Environment: FUZZ_JOBS (1: parallel fuzzing processes per target), FUZZ_SANITIZER
# (address; "none" is faster), FUZZ_ARGS (extra libFuzzer flags, e.g. -max_len=4096).
set -euo pipefail

SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(definition_toml context_json)
case "$SECONDS_EACH" in '' | *[!0-9]*) echo "SECONDS must be a whole number" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/fuzz"
log() { echo "==> $*" >&2; }

command -v cargo-fuzz >/dev/null 2>&1 || {
    echo "cargo-fuzz is required: cargo install cargo-fuzz" >&2
    exit 1
}
export RUSTC_BOOTSTRAP=1
# Never the main crate's target dir: different flags would rebuild everything there.
export CARGO_TARGET_DIR="$ROOT/fuzz/target"
SANITIZER=${FUZZ_SANITIZER:-address}
JOBS=${FUZZ_JOBS:-1}

JOB_ARGS=()
[ "$JOBS" -gt 1 ] && JOB_ARGS=(-jobs="$JOBS" -workers="$JOBS")
# One build for all targets (the strategist crate is compiled once, with the sanitizer).
log "building the fuzz targets (sanitizer: $SANITIZER)"
cargo fuzz build --sanitizer "$SANITIZER"
FAILED=()
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    for src in "seeds/$t" "regressions/$t"; do
        [ -d "$src" ] && cp -n "$src"/* "corpus/$t/" 2>/dev/null || true
    done
    log "fuzzing $t for ${SECONDS_EACH}s ($JOBS job(s))"
    set +e
    cargo fuzz run --sanitizer "$SANITIZER" "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        ${JOB_ARGS[@]+"${JOB_ARGS[@]}"} -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" ${FUZZ_ARGS:-} >"artifacts/$t.log" 2>&1
    rc=$?
    set -e
    shopt -s nullglob
    logs=("artifacts/$t.log" fuzz-*.log) # fuzz-N.log: one per job when FUZZ_JOBS > 1
    shopt -u nullglob
    runs=$(awk '$1 == "stat::number_of_executed_units:" { s += $2 } END { print s + 0 }' "${logs[@]}")
    corpus=$(find "corpus/$t" -type f | wc -l)
    if [ "$rc" = 0 ]; then
        echo "$t: ok, $runs executions in ${SECONDS_EACH}s, corpus $corpus inputs"
    else
        FAILED+=("$t")
        echo "$t: FAILED (rc $rc) after $runs executions; see fuzz/artifacts/$t.log" >&2
        grep -h -m 5 -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "artifacts/$t.log" >&2 || true
        ls "artifacts/$t" >&2 || true
    fi
    rm -f fuzz-*.log
done
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "crashes in: ${FAILED[*]}" >&2
    exit 1
fi
