"""Start and reload of a large schedule, timed through systemd's notify protocol.

beatd is started with NOTIFY_SOCKET pointing at a datagram socket of ours, as systemd would:
- start: from exec to READY=1 (config parsed and validated, timers built, state opened, API
  listening);
- reload: one job of one drop-in changed, SIGHUP sent; from the signal to the READY=1 that
  follows RELOADING=1 (the new config applied).
The schedule: N jobs (default 100 000) in drop-ins of 20 000; every tenth an `every 1s` noop,
the others daily cron jobs in five zones. Lateness of the 1 s jobs is read from beatd's
histogram over a 6 s window around the reload (bucket upper bounds), with the peak RSS.
Run by scripts/bench-start-reload.sh.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import benchlib

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]


def job(i, changed=False):
    if i % 10 == 0:
        return f'[jobs.j{i}]\nevery = "1s"\naction = "noop"\n'
    minute = (i * 7 + (1 if changed else 0)) % 60
    return (f'[jobs.j{i}]\ncron = "{minute} {i % 24} * * *"\ntimezone = "{ZONES[i % 5]}"\n'
            f'action = "command"\ncommand = "/usr/local/bin/task {i}"\n')


def write_part(d, part, n, changed=None):
    path = os.path.join(d, f"conf.d/part-{part:02}.toml")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for i in range(part * 20000, min((part + 1) * 20000, n)):
            f.write(job(i, changed == i))
    os.rename(tmp, path)


def wait_for(sock, word, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        msg = sock.recv(65536).decode(errors="replace")
        if word in msg.split("\n"):
            return time.monotonic()
    raise SystemExit(f"no {word} within {limit} s")


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    print(f"{n} jobs ({n // 10} every 1 s, the rest daily cron commands in five zones), drop-ins of 20 000, "
          f"release build; times from the notify socket\n")
    print("| run | start → READY | reload (one job changed) → READY | 1 s jobs' lateness around the reload: p99 ≤ / max ≤ | peak RSS |")
    print("|---|---|---|---|---|")
    for run in range(1, runs + 1):
        with tempfile.TemporaryDirectory() as d:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock_path = os.path.join(d, "notify.sock")
                sock.bind(sock_path)
                port = benchlib.free_port()
                with open(os.path.join(d, "beatd.toml"), "w") as f:
                    f.write(f'[scheduler]\ntimezone = "UTC"\nhistory = "off"\ninclude = ["conf.d/*.toml"]\n'
                            f'[api]\nlisten = "127.0.0.1:{port}"\nper_job_metrics = false\n')
                os.mkdir(os.path.join(d, "conf.d"))
                for part in range((n + 19999) // 20000):
                    write_part(d, part, n)
                env = dict(os.environ, NOTIFY_SOCKET=sock_path)
                t0 = time.monotonic()
                proc = subprocess.Popen([binary, "run", "--config", os.path.join(d, "beatd.toml"),
                                         "--log-level", "warn"], env=env, stdout=subprocess.DEVNULL)
                try:
                    start = wait_for(sock, "READY=1") - t0
                    time.sleep(3)
                    url = f"http://127.0.0.1:{port}/metrics"
                    before = benchlib.lateness(url)
                    time.sleep(1)
                    write_part(d, 0, n, changed=1)
                    t1 = time.monotonic()
                    proc.send_signal(signal.SIGHUP)
                    wait_for(sock, "RELOADING=1")
                    reload = wait_for(sock, "READY=1") - t1
                    time.sleep(4)
                    after = benchlib.lateness(url)
                    rss = benchlib.status_mib(proc.pid)
                finally:
                    proc.terminate()
                    proc.wait()
                window = benchlib.window(after, before)
                ms = lambda v: "> 10 s" if v == float("inf") else f"{v * 1e3:g} ms"
                print(f"| {run} | {start * 1e3:.0f} ms | {reload * 1e3:.0f} ms | {ms(benchlib.bucket_quantile(window, 0.99))} / "
                      f"{ms(benchlib.bucket_quantile(window, 1.0))} ({window[-1][1]:.0f} fires) | {rss:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
