#!/usr/bin/env bash
# CI: proves the benchmark suite and its report tool build and run (quick mode: tiny sizes, a few
# milliseconds per benchmark). Numbers from this run mean nothing; docs/ is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
benches/report.sh --quick
report=${CARGO_TARGET_DIR:-target}/bench-results/quick/benchmarks.md
grep -q '^## Targets' "$report"
grep -q '^### read-heavy/uniform' "$report"
grep -q '^## Memory under churn' "$report"
grep -q '^### 2 writers' "$report"
echo "bench quick mode: report written to $report"
