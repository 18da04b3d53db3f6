"""Lateness of N jobs every second, read from beatd's own histogram.

N `every 1s` noop jobs in drop-ins of 20 000, `per_job_metrics = false`, the given `history`
mode; the release binary; 3 s of warm-up, then a 12 s window: fires in the window (against
N × 12), the share within 1 ms, p50 and p99 (bucket upper bounds of
`beatd_fire_lateness_seconds`), and the peak RSS. With `cluster`, the daemon is one node of a
cluster in the Redis at 127.0.0.1:6379 (a name of its own): each tick waits for its fence.
Run by scripts/bench-lateness.sh.
"""

import os
import subprocess
import sys
import tempfile
import time

import benchlib


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    history = sys.argv[3] if len(sys.argv) > 3 else "off"
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    cluster = len(sys.argv) > 5 and sys.argv[5] == "cluster"
    where = ", one node of a [cluster] in Redis" if cluster else ""
    print(f"{n} jobs every 1 s (noop), history = \"{history}\"{where}, 3 s warm-up, 12 s window\n")
    print("| run | fires kept | within 1 ms | p50 ≤ | p99 ≤ | max ≤ | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for run in range(1, runs + 1):
        with tempfile.TemporaryDirectory() as d:
            port = benchlib.free_port()
            with open(os.path.join(d, "beatd.toml"), "w") as f:
                f.write(f'[scheduler]\ntimezone = "UTC"\nhistory = "{history}"\nstate_dir = "{d}/state"\n'
                        f'include = ["conf.d/*.toml"]\n[api]\nlisten = "127.0.0.1:{port}"\nper_job_metrics = false\n')
                if cluster:
                    f.write(f'[cluster]\nredis = "redis://127.0.0.1:6379/0"\nname = "bench-{os.getpid()}-{run}"\n')
            os.mkdir(os.path.join(d, "conf.d"))
            for part in range((n + 19999) // 20000):
                with open(os.path.join(d, f"conf.d/part-{part:02}.toml"), "w") as f:
                    for i in range(part * 20000, min((part + 1) * 20000, n)):
                        f.write(f'[jobs.j{i}]\nevery = "1s"\naction = "noop"\n')
            proc = subprocess.Popen([binary, "run", "--config", os.path.join(d, "beatd.toml"), "--log-level", "warn"],
                                    stdout=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                time.sleep(3)
                before = benchlib.lateness(url)
                time.sleep(12)
                after = benchlib.lateness(url)
                rss = benchlib.status_mib(proc.pid)
            finally:
                proc.terminate()
                proc.wait()
            window = benchlib.window(after, before)
            total = window[-1][1]
            within = next((c for le, c in window if le == 0.001), 0) / total if total else 0
            ms = lambda v: f"{v * 1e3:g} ms"
            print(f"| {run} | {total / (n * 12) * 100:.1f} % | {within * 100:.0f} % | "
                  f"{ms(benchlib.bucket_quantile(window, 0.5))} | {ms(benchlib.bucket_quantile(window, 0.99))} | "
                  f"{ms(benchlib.bucket_quantile(window, 1.0))} | {rss:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
