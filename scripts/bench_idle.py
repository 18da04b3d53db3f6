"""CPU time of an idle daemon: 100 000 cron jobs that fire once a year, nothing due.

The timer loop must sleep until the next fire (a timerfd deadline), not poll: the CPU time
beatd uses over a window with nothing due should be zero. beatd is started with N `command`
jobs (`M H 1 1 *` in five zones, drop-ins of 20 000), left 5 s to settle, then its user and
system time (/proc/PID/stat, in clock ticks of 10 ms) and context switches are read at the
start and end of a 30 s window. Run by scripts/bench-idle.sh.
"""

import os
import subprocess
import sys
import tempfile
import time

import benchlib

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def switches(pid):
    """Voluntary and involuntary context switches of all of beatd's threads."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            total += sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
    return total


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    window = 30
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "beatd.toml"), "w") as f:
            f.write(f'[scheduler]\ntimezone = "UTC"\nstate_dir = "{d}/state"\ninclude = ["conf.d/*.toml"]\n'
                    f'[api]\nlisten = "127.0.0.1:{benchlib.free_port()}"\nper_job_metrics = false\n')
        os.mkdir(os.path.join(d, "conf.d"))
        for part in range((n + 19999) // 20000):
            with open(os.path.join(d, f"conf.d/part-{part:02}.toml"), "w") as f:
                for i in range(part * 20000, min((part + 1) * 20000, n)):
                    f.write(f'[jobs.j{i}]\ncron = "{i % 60} {i % 24} 1 1 *"\ntimezone = "{ZONES[i % 5]}"\n'
                            f'action = "command"\ncommand = "/usr/local/bin/task {i}"\n')
        proc = subprocess.Popen([binary, "run", "--config", os.path.join(d, "beatd.toml"), "--log-level", "warn"],
                                stdout=subprocess.DEVNULL)
        try:
            time.sleep(5)
            cpu0, sw0 = cpu_ticks(proc.pid), switches(proc.pid)
            time.sleep(window)
            cpu1, sw1 = cpu_ticks(proc.pid), switches(proc.pid)
            rss = benchlib.status_mib(proc.pid, "VmRSS")
        finally:
            proc.terminate()
            proc.wait()
    print(f"{n} cron jobs, none due: over {window} s, CPU time {(cpu1 - cpu0) * 10} ms, "
          f"{sw1 - sw0} context switches, RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
