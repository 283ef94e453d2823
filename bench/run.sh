#!/usr/bin/env bash
# make bench: every benchmark in turn (each prints its figures against its
# anchor, measured in the same run), then one table of them all.
# The table ends with the comparison against bench/baseline.json (bench/table.ts).
# HOSTLOCK_BENCH_SMOKE=1: tiny sizes. BENCH_ONLY="handoff contention": only those.
# BENCH_STRICT=1: exit non-zero when a figure is worse than the baseline.
# Run after `make build` (and `make venv` for goal 2).
set -uo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
log=${BENCH_LOG:-$out/bench-$(date -u +%Y%m%dT%H%M%SZ).log}
mkdir -p "$(dirname "$log")"
# Node as it starts bare (bench/lib.ts, bareNodeEnvironment, says why).
for v in NODE_EXTRA_CA_CERTS NODE_OPTIONS; do
  [ -n "${!v+set}" ] && echo "[bench] $v is set (${!v}): unset for these figures" >&2 && unset "$v"
done
echo "hostlock benchmarks on $(uname -n): $(nproc) cores, $(node --version), load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$log"
status=0
for b in ${BENCH_ONLY:-startup playbook playbook-stores handoff hosts200 waiters500 contention flock-api pg-store etcd-handoff}; do
  echo "== $b" | tee -a "$log"
  if ! node "build/bench/$b.js" 2> >(tee -a "$log.stderr" >&2) | tee -a "$log"; then
    echo "benchmark $b failed" | tee -a "$log"
    status=1
  fi
done
echo | tee -a "$log"
node build/bench/table.js < "$log" | tee -a "$log.table"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "(log: $log)"
exit $status
