#!/usr/bin/env bash
# Lateness of N `every 1s` jobs from beatd's own histogram.
#   scripts/bench-lateness.sh [JOBS] [HISTORY] [RUNS] [cluster]
#   (default 10 000 jobs, "off", 2 runs, no cluster; "cluster" needs Redis on 127.0.0.1:6379)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cd scripts && exec python3 bench_lateness.py ../target/release/beatd "${1:-10000}" "${2:-off}" "${3:-2}" "${4:-}"
