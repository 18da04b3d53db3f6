#!/usr/bin/env bash
# Start-to-READY and reload-to-READY of a large schedule, through systemd's notify protocol.
#   scripts/bench-start-reload.sh [JOBS] [RUNS]     (default 100 000 jobs, 2 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 scripts/bench_start_reload.py target/release/beatd "$@"
