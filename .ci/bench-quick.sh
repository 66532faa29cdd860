#!/usr/bin/env bash
# CI: proves the benchmark suite and its report tool build and run (quick mode: tiny sizes, a few
# milliseconds per benchmark), and the scaling script's smoke mode. Numbers from this run mean
# nothing; docs/ is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
benches/report.sh --quick
report=${CARGO_TARGET_DIR:-target}/bench-results/quick/benchmarks.md
grep -q '^## Targets' "$report"
grep -q '^### read-heavy/uniform' "$report"
grep -q '^## Memory under churn' "$report"
grep -q '^### 2 writers' "$report"
echo "bench quick mode: report written to $report"
# The scaling run (issue 19) in its smoke mode: 1, 2 and 4 threads, 50 ms per case, one round;
# the report.sh step above has built its binary and the report tool already.
benches/scaling.sh --quick
scaling=${CARGO_TARGET_DIR:-target}/bench-results/scaling-quick
grep -q '^## Scaling' "$scaling/scaling.md"
grep -q '^### Oversubscribed' "$scaling/scaling.md"
test -s "$scaling/img/scaling-read-heavy-uniform.svg"
test "$(wc -l <"$scaling/scaling.csv")" -gt 36
echo "scaling quick mode: $scaling/scaling.md"
