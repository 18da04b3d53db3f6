#!/usr/bin/env bash
# The cluster's failure scenarios, one after the other, with their figures: real beatd
# binaries and redis-server processes of their own (a Sentinel too), no mocks. The same tests
# run in `cargo test`; this prints what they measured (failover times, duplicates, missing).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --test integration cluster:: -- --test-threads 1 --nocapture 2>&1 |
  grep -E '^(test cluster::|failover after|handover after|fires [0-9]+, duplicate|test result)'
