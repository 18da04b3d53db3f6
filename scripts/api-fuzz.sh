#!/usr/bin/env bash
# Runs schemathesis against a real beatd, with docs/openapi.json as the contract: every
# response must be documented (status, content type, schema), no request may make a 5xx,
# and invalid input must be refused. Bounded: EXAMPLES per operation (default 50).
#
#   scripts/api-fuzz.sh            (needs python3 with venv; makes target/schemathesis-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${EXAMPLES:-50}

venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis>=4,<5"
fi
cargo build -q
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$token" > "$work/token"
chmod 600 "$work/token"
cat > "$work/beatd.toml" <<EOF
[api]
listen = "127.0.0.1:$port"
token_file = "token"

[jobs.tick]
every = "1s"
action = "noop"

[jobs.cmd]
every = "1h"
action = "command"
command = "true"

[jobs.off]
every = "1h"
action = "noop"
enabled = false
EOF
./target/debug/beatd run --config "$work/beatd.toml" 2> "$work/beatd.log" &
beatd=$!
trap 'kill $beatd 2>/dev/null; wait $beatd 2>/dev/null; rm -rf "$work"' EXIT
# Up to 30 s: a loaded CI machine can take a while to start a fresh debug binary.
up=false
for _ in $(seq 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=true; break; fi
  kill -0 $beatd 2>/dev/null || break
  sleep 0.1
done
if [ "$up" != true ]; then
  echo "beatd did not start listening on 127.0.0.1:$port:" >&2
  cat "$work/beatd.log" >&2
  exit 1
fi
"$venv/bin/schemathesis" run docs/openapi.json \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples "$examples" \
  --workers 1 \
  --phases examples,coverage,fuzzing \
  --no-color
