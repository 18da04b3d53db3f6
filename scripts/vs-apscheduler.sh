#!/usr/bin/env bash
# beatd and APScheduler side by side, in one run, on the same work: N `every 1s` jobs that do
# nothing (default N = 10 000 and 50 000). Prints a Markdown table (BENCHMARKS.md keeps one).
#   scripts/vs-apscheduler.sh [N...]
# Builds beatd (release) and makes a virtualenv with APScheduler 3 under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
venv=target/apscheduler-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "apscheduler>=3.10,<4"
fi
exec "$venv/bin/python" scripts/vs_apscheduler.py target/release/beatd "$@"
