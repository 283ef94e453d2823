#!/usr/bin/env bash
# make bench-baseline: runs the benchmarks BENCH_RUNS times (default 3) and
# writes bench/baseline.json, the figures `make bench` compares against, each
# ratio with its run-to-run spread. BENCH_ONLY and HOSTLOCK_BENCH_ROUNDS as in
# bench/run.sh; a figure no run measured is left out.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-3}
logs=()
for i in $(seq 1 "$runs"); do
  echo "== baseline run $i of $runs" >&2
  log="bench/out/baseline-$(date -u +%Y%m%dT%H%M%SZ)-$i.log"
  BENCH_LOG=$log bash bench/run.sh >&2
  logs+=("$log")
done
node build/bench/baseline.js bench/baseline.json "${logs[@]}"
