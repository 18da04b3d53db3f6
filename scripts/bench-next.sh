#!/usr/bin/env bash
# Times `beatd next` printing a million fire times as JSON, five runs, and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/beatd
printf '| command | run 1 | run 2 | run 3 | run 4 | run 5 |\n|---|---|---|---|---|---|\n'
for args in "--cron '*/5 * * * *' --tz UTC" "--cron '*/5 * * * *' --tz America/New_York" "--every 30s"; do
  row="| \`beatd next $args --count 1000000 --json > /dev/null\` |"
  for _ in 1 2 3 4 5; do
    start=$(date +%s.%N)
    eval "$bin next $args --count 1000000 --json" > /dev/null
    end=$(date +%s.%N)
    row="$row $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f s", b - a }') |"
  done
  echo "$row"
done
