#!/usr/bin/env bash
# Memory of a large loaded schedule and the time `beatd check` takes on it.
#   scripts/bench-memory.sh [JOBS] [RUNS]     (default 100 000 jobs, 2 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cd scripts && exec python3 bench_memory.py ../target/release/beatd "$@"
