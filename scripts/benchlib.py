"""What the bench scripts share: a free port, /proc figures, and beatd's lateness histogram."""

import socket
import urllib.request

LATENESS = "beatd_fire_lateness_seconds"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_mib(pid, field="VmHWM"):
    """A memory line of /proc/PID/status (VmHWM: the peak RSS; VmRSS: now), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def buckets(text, name=LATENESS):
    """A histogram's cumulative buckets, (upper bound, count), from metrics text."""
    out = []
    prefix = f'{name}_bucket{{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le, value = line[len(prefix):].split('"} ')
            out.append((float("inf") if le == "+Inf" else float(le), float(value)))
    return out


def lateness(metrics_url):
    """beatd's lateness buckets now, read from its /metrics."""
    return buckets(urllib.request.urlopen(metrics_url).read().decode())


def window(after, before):
    """The buckets of what was observed between two readings."""
    return [(le, a - b) for (le, a), (_, b) in zip(after, before)]


def bucket_quantile(b, q):
    """The upper bound of the bucket holding quantile `q`."""
    total = b[-1][1] if b else 0
    for le, c in b:
        if c >= q * total:
            return le
    return float("nan")
