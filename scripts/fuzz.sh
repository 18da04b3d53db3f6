#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS each, default 60),
# starting from the committed seed corpus in fuzz/corpus/TARGET. What the fuzzer adds goes to
# target/fuzz-corpus/TARGET, so a run leaves the tree clean. Any panic, failed check, input
# slower than 10 s or over 2 GiB fails the run; the input that did it is kept in
# fuzz/artifacts/TARGET/ and is to become a regression test in the main suite.
#
#   scripts/fuzz.sh                 all targets
#   scripts/fuzz.sh cron config_toml
#   FUZZ_SECONDS=600 scripts/fuzz.sh envelopes
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cron duration config_bytes config_toml envelopes)

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
# libFuzzer's flags (-Zsanitizer) need a nightly compiler; without one, the stable compiler
# accepts them when told it is building itself.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

cd fuzz
"${fuzz[@]}" build -O
status=0
for t in "${targets[@]}"; do
  work=../target/fuzz-corpus/$t
  mkdir -p "$work"
  echo "== fuzz $t (${seconds}s)"
  if "${fuzz[@]}" run -O "$t" "$work" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$work.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$work.log" || true
  else
    status=1
    echo "fuzz target $t failed:" >&2
    grep -a -A3 'panicked at' "$work.log" | head -n 20 >&2 || true
    grep -aE 'SUMMARY|Test unit written to' "$work.log" | sort -u >&2 || true
  fi
done
exit $status
