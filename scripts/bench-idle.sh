#!/usr/bin/env bash
# CPU time of an idle daemon with a large schedule and nothing due.
#   scripts/bench-idle.sh [JOBS]     (default 100 000 jobs)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cd scripts && exec python3 bench_idle.py ../target/release/beatd "$@"
