#!/usr/bin/env bash
# Runs the learners' resume tests (and the data-parallel ones that resume) as several
# concurrent copies, each copy with the test harness's default thread count, so that
# several trainings run backward passes at once in one process and several processes share
# the cores. Passes only when every run of every copy passes.
#
#   scripts/stress-resume.sh [COPIES] [ROUNDS]     (default 5 x 10 = 50 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-5}
rounds=${2:-10}
# supmae-train's learner test binary (tests/learners: pretrain, finetune and the data-parallel
# ones, as modules), built as `cargo test --workspace` builds it (one feature set).
mapfile -t bins < <(cargo test --workspace --locked --no-run --message-format=json \
    --test learners 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["kind"] == ["test"] and "supmae-train" in m["package_id"]):
        print(m["executable"])
')
[ "${#bins[@]}" -eq 1 ] || { echo "expected 1 test binary, found ${#bins[@]}" >&2; exit 1; }
# Every resume test in it: pretrain::, finetune:: (both learners), distributed::,
# distributed_classifiers:: (they share one collective lock).
[ "$("${bins[0]}" resum --list 2>/dev/null | grep -c ': test$')" -ge 5 ] \
    || { echo "fewer than 5 resume tests in ${bins[0]}" >&2; exit 1; }
unset RUST_TEST_THREADS
logs=$(mktemp -d)
passed=0
failed=0
for round in $(seq 1 "$rounds"); do
    pids=()
    for copy in $(seq 1 "$copies"); do
        (
            for bin in "${bins[@]}"; do
                "$bin" resum --quiet || exit 1
            done
        ) >"$logs/$round-$copy.log" 2>&1 &
        pids+=("$!")
    done
    for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            echo "round $round copy $((i + 1)) FAILED:" >&2
            tail -30 "$logs/$round-$((i + 1)).log" >&2
        fi
    done
    echo "round $round/$rounds: $passed passed, $failed failed so far"
done
echo "stress-resume: $passed of $((copies * rounds)) passed"
[ "$failed" -eq 0 ]
