"""Memory of a large loaded schedule, and the time `beatd check` takes on it.

The schedule is bench_start_reload's (N jobs in drop-ins of 20 000: every tenth an `every 1s`
noop, the others daily cron jobs in five zones), twice: with the cron jobs as `command` jobs and
as `noop` jobs. For each: `beatd check` wall time and peak RSS, then `beatd run` (history off,
per-job metrics off) for 15 s: RSS then, and its peak (VmHWM) since exec. Two runs each.
Run by scripts/bench-memory.sh.
"""

import os
import re
import subprocess
import sys
import tempfile
import time

import bench_start_reload as schedule
import benchlib


def write(d, n, noop):
    with open(os.path.join(d, "beatd.toml"), "w") as f:
        f.write(f'[scheduler]\ntimezone = "UTC"\nhistory = "off"\nstate_dir = "{d}/state"\n'
                f'include = ["conf.d/*.toml"]\n[api]\nlisten = "127.0.0.1:{benchlib.free_port()}"\n'
                f'per_job_metrics = false\n')
    os.mkdir(os.path.join(d, "conf.d"))
    for part in range((n + 19999) // 20000):
        schedule.write_part(d, part, n)
        if noop:
            path = os.path.join(d, f"conf.d/part-{part:02}.toml")
            with open(path) as f:
                text = re.sub(r'action = "command"\ncommand = "[^"]*"\n', 'action = "noop"\n', f.read())
            with open(path, "w") as f:
                f.write(text)


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    print(f"{n} jobs ({n // 10} every 1 s, the rest daily cron jobs in five zones), drop-ins of 20 000\n")
    print("| cron jobs are | run | `beatd check` | check's peak RSS | `run`: RSS after 15 s | `run`: peak RSS |")
    print("|---|---|---|---|---|---|")
    for noop in (False, True):
        for run in range(1, runs + 1):
            with tempfile.TemporaryDirectory() as d:
                write(d, n, noop)
                config = os.path.join(d, "beatd.toml")
                t0 = time.monotonic()
                check = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "check", "--config", config],
                                       capture_output=True, text=True, check=True)
                took = time.monotonic() - t0
                check_rss = int(check.stderr.strip().splitlines()[-1]) / 1024
                proc = subprocess.Popen([binary, "run", "--config", config, "--log-level", "warn"],
                                        stdout=subprocess.DEVNULL)
                try:
                    time.sleep(15)
                    rss, peak = benchlib.status_mib(proc.pid, "VmRSS"), benchlib.status_mib(proc.pid)
                finally:
                    proc.terminate()
                    proc.wait()
                kind = "`noop`" if noop else "`command`"
                print(f"| {kind} | {run} | {took * 1e3:.0f} ms | {check_rss:.0f} MiB | {rss:.0f} MiB | {peak:.0f} MiB |",
                      flush=True)


if __name__ == "__main__":
    main()
