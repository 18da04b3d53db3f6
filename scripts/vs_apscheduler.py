"""beatd and APScheduler side by side on the same work: N jobs every second, doing nothing.

Both are measured the same way: after a 3 s warm-up, over a 12 s window,
- fires kept: fires dispatched in the window / (N x 12);
- lateness: dispatch minus scheduled instant (beatd: its own histogram, bucket upper bounds;
  APScheduler: the job-submitted event's time minus its scheduled run time);
- peak RSS of the process (VmHWM).
Run by scripts/vs-apscheduler.sh, which builds beatd and makes the virtualenv.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import benchlib

WARM_UP, WINDOW = 3, 12


def quantile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def apscheduler(n):
    """Runs in a child process: prints 'kept p50 p99 rss missed'."""
    from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED
    from apscheduler.schedulers.background import BackgroundScheduler
    from datetime import datetime, timedelta, timezone

    lock = threading.Lock()
    window = {"open": False, "late": [], "missed": 0}

    def submitted(event):
        now = datetime.now(timezone.utc)
        if window["open"]:
            with lock:
                for t in event.scheduled_run_times:
                    window["late"].append((now - t).total_seconds())

    def missed(event):
        if window["open"]:
            with lock:
                window["missed"] += 1

    sched = BackgroundScheduler(timezone="UTC")
    sched.add_listener(submitted, EVENT_JOB_SUBMITTED)
    sched.add_listener(missed, EVENT_JOB_MISSED)
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
    for i in range(n):
        sched.add_job(lambda: None, "interval", seconds=1, start_date=start, id=f"j{i}")
    sched.start()
    time.sleep(max(0.0, (start - datetime.now(timezone.utc)).total_seconds()) + WARM_UP)
    window["open"] = True
    time.sleep(WINDOW)
    window["open"] = False
    with lock:
        late = list(window["late"])
        missed_n = window["missed"]
    rss = benchlib.status_mib("self")
    sched.shutdown(wait=False)
    print(len(late) / (n * WINDOW), quantile(late, 0.5), quantile(late, 0.99), rss, missed_n, flush=True)
    os._exit(0)


def beatd(n, binary):
    with tempfile.TemporaryDirectory() as d:
        port = benchlib.free_port()
        with open(os.path.join(d, "beatd.toml"), "w") as f:
            f.write(
                f'[scheduler]\ntimezone = "UTC"\nhistory = "off"\ninclude = ["conf.d/*.toml"]\n'
                f'[api]\nlisten = "127.0.0.1:{port}"\nper_job_metrics = false\n'
            )
        os.mkdir(os.path.join(d, "conf.d"))
        for part, first in enumerate(range(0, n, 20000)):
            with open(os.path.join(d, f"conf.d/part-{part:02}.toml"), "w") as f:
                for i in range(first, min(first + 20000, n)):
                    f.write(f'[jobs.j{i}]\nevery = "1s"\naction = "noop"\n')
        proc = subprocess.Popen([binary, "run", "--config", os.path.join(d, "beatd.toml"), "--log-level", "warn"],
                                stdout=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 30
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1).read()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise SystemExit("beatd did not come up")
                    time.sleep(0.05)
            time.sleep(WARM_UP)
            before = benchlib.lateness(url + "/metrics")
            time.sleep(WINDOW)
            after = benchlib.lateness(url + "/metrics")
            rss = benchlib.status_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
        window = benchlib.window(after, before)
        fired = window[-1][1]
        return fired / (n * WINDOW), benchlib.bucket_quantile(window, 0.5), benchlib.bucket_quantile(window, 0.99), rss


def ms(v, bound=False):
    if v != v:
        return "—"
    if v == float("inf"):
        return "> 10 s"
    return f"{'≤ ' if bound else ''}{v * 1e3:.1f} ms" if v < 1 else f"{'≤ ' if bound else ''}{v:.2f} s"


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--apscheduler":
        apscheduler(int(sys.argv[2]))
        return
    binary = sys.argv[1]
    counts = [int(x) for x in sys.argv[2:]] or [10000, 50000]
    import apscheduler as aps
    print(f"N noop jobs every 1 s; {WARM_UP} s warm-up, then a {WINDOW} s window; "
          f"beatd release build (history off, per_job_metrics off), APScheduler {aps.__version__} "
          f"(BackgroundScheduler, default thread pool), Python {sys.version.split()[0]}\n")
    print("| jobs | scheduler | fires kept | lateness p50 | lateness p99 | peak RSS |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        kept, p50, p99, rss = beatd(n, binary)
        print(f"| {n} | beatd | {kept * 100:.1f} % | {ms(p50, True)} | {ms(p99, True)} | {rss:.0f} MiB |", flush=True)
        out = subprocess.run([sys.executable, __file__, "--apscheduler", str(n)], capture_output=True, text=True,
                             timeout=600)
        fields = out.stdout.split()
        if len(fields) != 5:
            print(f"| {n} | APScheduler | failed: {out.stderr.strip().splitlines()[-1:]} | | | |")
            continue
        kept, p50, p99, rss, missed = (float(x) for x in fields)
        note = f" ({int(missed)} missed)" if missed else ""
        print(f"| {n} | APScheduler | {kept * 100:.1f} %{note} | {ms(p50)} | {ms(p99)} | {rss:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
