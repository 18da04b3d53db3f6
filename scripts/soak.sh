#!/usr/bin/env bash
# A soak: beatd (release build) for MINUTES minutes (default 10) on a mixed schedule:
#   - commands that succeed, fail, and time out (every 1-2 s);
#   - an HTTP check against a server that flaps between 200 and 500 every 10 s;
#   - a celery job into a Redis of the soak's own, which is stopped for 20 s every 3 minutes;
#   - a reload (SIGHUP) every 30 s that changes one job's command.
# Every 30 s it samples beatd's RSS and open descriptors. At the end it prints them, and checks
# the run history against the expected slots: per job, every slot from its first run to its
# last once (nothing lost, nothing doubled), and every celery message in Redis once.
#
#   scripts/soak.sh            # 10 minutes
#   scripts/soak.sh 2          # a short run
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
total=$((minutes * 60))

cargo build --release -q
beatd=$PWD/target/release/beatd
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
http_port=$(free_port)
api_port=$(free_port)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --dir "$work" \
    --logfile "$work/redis.log" --daemonize yes
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server did not start" >&2
  exit 1
}
start_redis

# The flapping server: 200 for 10 s, then 500 for 10 s.
python3 - "$http_port" >/dev/null 2>&1 <<'EOF' &
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if int(time.time() / 10) % 2 == 0 else 500
        self.send_response(code); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
pids+=($!)

config() {
  cat > "$work/beatd.toml" <<EOF
[scheduler]
state_dir = "state"

[api]
listen = "127.0.0.1:$api_port"

[brokers.main]
url = "redis://127.0.0.1:$redis_port/0"

[jobs.succeeds]
every = "1s"
action = "command"
command = "true"

[jobs.fails]
every = "1s"
action = "command"
command = "sh -c 'echo failing >&2; exit 3'"
retries = 0

[jobs.times-out]
every = "2s"
action = "command"
command = "sleep 5"
timeout = "1s"

[jobs.flapping]
every = "1s"
action = "http_check"
url = "http://127.0.0.1:$http_port/"
timeout = "2s"

[jobs.celery]
every = "1s"
action = "celery"
broker = "main"
task = "tasks.soak"
args = [1, 2]
catch_up = "all"

[jobs.reloaded]
every = "1s"
action = "command"
command = "echo version $1"
EOF
}
config 0
"$beatd" run --config "$work/beatd.toml" > "$work/beatd.log" 2>&1 &
beatd_pid=$!
pids+=($beatd_pid)
sleep 1
kill -0 "$beatd_pid" 2>/dev/null || { cat "$work/beatd.log"; exit 1; }

sample() {
  local rss fds
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$beatd_pid/status")
  fds=$(ls "/proc/$beatd_pid/fd" | wc -l)
  printf '%6s s  RSS %6.1f MiB  fds %4s\n' "$1" "$(echo "$rss / 1024" | bc -l)" "$fds" | tee -a "$work/samples"
}

echo "soak: $minutes min, beatd pid $beatd_pid"
outages=0
reloads=0
started=$(date +%s)
for ((t = 1; t <= total; t++)); do
  sleep 1
  elapsed=$(($(date +%s) - started))
  if ((t % 30 == 0)); then
    reloads=$((reloads + 1))
    config "$reloads"
    kill -HUP "$beatd_pid"
    sample "$t"
  fi
  if ((t % 180 == 0)) && ((t + 40 < total)); then
    outages=$((outages + 1))
    redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || true
    (sleep 20 && start_redis) &
  fi
  ((elapsed >= total)) && break
done
# Give the last retry after an outage time to land, then stop cleanly.
sleep 3
kill -TERM "$beatd_pid"
wait "$beatd_pid" || true

"$beatd" history --config "$work/beatd.toml" --json -n 10000000 > "$work/history.jsonl"
redis-cli -p "$redis_port" --raw lrange celery 0 -1 > "$work/celery.txt"
python3 - "$work" "$outages" "$reloads" <<'EOF'
import json, sys, collections, datetime, re
work, outages, reloads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = [json.loads(l) for l in open(f"{work}/history.jsonl") if l.strip()]
step = {"succeeds": 1, "fails": 1, "times-out": 2, "flapping": 1, "celery": 1, "reloaded": 1}
def ts(s): return int(datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp())
by_job = collections.defaultdict(list)
for r in runs:
    by_job[r["job"]].append(ts(r["scheduled_at"]))
ok = True
print(f"\n{'job':<10} {'runs':>6} {'slots':>6} {'lost':>5} {'doubled':>8}  outcomes")
for job, every in step.items():
    slots = by_job.get(job, [])
    count = collections.Counter(slots)
    doubled = sum(c - 1 for c in count.values())
    expected = set(range(min(slots), max(slots) + 1, every)) if slots else set()
    lost = len(expected - set(count))
    outcomes = collections.Counter(r["outcome"] for r in runs if r["job"] == job)
    print(f"{job:<10} {len(slots):>6} {len(expected):>6} {lost:>5} {doubled:>8}  {dict(outcomes)}")
    ok &= lost == 0 and doubled == 0 and len(slots) > 0
messages = [json.loads(l) for l in open(f"{work}/celery.txt") if l.strip()]
ids = collections.Counter(m["headers"]["id"] for m in messages)
delivered = len([r for r in runs if r["job"] == "celery" and r["outcome"] == "success"])
dup = sum(c - 1 for c in ids.values())
print(f"\ncelery messages in Redis: {len(messages)}, distinct task ids {len(ids)}, doubled {dup}; "
      f"runs recorded delivered: {delivered}")
ok &= dup == 0 and len(ids) == delivered
samples = [l for l in open(f"{work}/samples")]
rss = [float(re.search(r"RSS +([\d.]+)", l).group(1)) for l in samples]
fds = [int(re.search(r"fds +(\d+)", l).group(1)) for l in samples]
print(f"\nRSS MiB (every 30 s): {' '.join(f'{x:.1f}' for x in rss)}")
print(f"fds     (every 30 s): {' '.join(str(x) for x in fds)}")
growth = rss[-1] - rss[1] if len(rss) > 1 else 0
print(f"RSS from 60 s to the end: {rss[1] if len(rss) > 1 else rss[0]:.1f} -> {rss[-1]:.1f} MiB ({growth:+.1f}); "
      f"fds {min(fds)}..{max(fds)}; reloads {reloads}, broker outages {outages}")
ok &= growth < 5 and max(fds) - min(fds) <= 4
print("soak: " + ("OK" if ok else "FAILED"))
sys.exit(0 if ok else 1)
EOF
