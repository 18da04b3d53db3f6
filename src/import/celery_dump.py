"""Writes a Celery app's beat_schedule as JSON, for `beatd import celery`.

Run by beatd with the user's interpreter: python celery_dump.py APP, APP as celery -A takes it
(proj.celery:app, or a module holding `app` or `celery`). The current folder is on sys.path,
as for `celery -A`. Nothing but the JSON goes to stdout.
"""
import datetime
import json
import os
import sys


def field(value):
    """A crontab field as the user wrote it: a string, an int, or a sorted list for a set."""
    if isinstance(value, (set, frozenset, list, tuple, range)):
        return sorted(value)
    return value


def schedule(s):
    from celery.schedules import crontab, schedule as interval, solar

    if isinstance(s, crontab):
        return {
            "type": "crontab",
            "minute": field(s._orig_minute),
            "hour": field(s._orig_hour),
            "day_of_week": field(s._orig_day_of_week),
            "day_of_month": field(s._orig_day_of_month),
            "month_of_year": field(s._orig_month_of_year),
        }
    if isinstance(s, solar):
        return {"type": "solar", "event": s.event, "lat": s.lat, "lon": s.lon}
    if isinstance(s, interval):
        return {"type": "interval", "seconds": s.run_every.total_seconds(), "relative": bool(s.relative)}
    if isinstance(s, datetime.timedelta):
        return {"type": "interval", "seconds": s.total_seconds(), "relative": False}
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return {"type": "interval", "seconds": float(s), "relative": False}
    return {"type": type(s).__module__ + "." + type(s).__qualname__}


def plain(value):
    """Options and arguments as JSON can hold them; what it cannot is named, not dropped."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return {"__unsupported__": type(value).__qualname__, "repr": repr(value)[:200]}


def route(app, entry):
    """The queue Celery's own router sends the entry's task to (its options, task_routes,
    task_default_queue)."""
    try:
        r = app.amqp.router.route(
            dict(entry.get("options") or {}), entry.get("task"),
            tuple(entry.get("args") or ()), dict(entry.get("kwargs") or {}),
        )
        q = r.get("queue")
        return {"queue": q if isinstance(q, str) else getattr(q, "name", None)}
    except Exception as e:  # an entry the router cannot place: beatd says which
        return {"error": repr(e)[:200]}


def main():
    sys.path.insert(0, os.getcwd())
    from celery.app.utils import find_app

    app = find_app(sys.argv[1])
    conf = app.conf
    entries = []
    for name, entry in (conf.beat_schedule or {}).items():
        entries.append({
            "name": name,
            "task": entry.get("task"),
            "schedule": schedule(entry.get("schedule")),
            "args": list(entry.get("args") or ()),
            "kwargs": dict(entry.get("kwargs") or {}),
            "options": dict(entry.get("options") or {}),
            "relative": bool(entry.get("relative", False)),
            "route": route(app, entry),
        })
    dump = {
        "celery": __import__("celery").__version__,
        "timezone": str(app.timezone),
        "broker_url": conf.broker_url,
        "broker_transport_options": dict(conf.broker_transport_options or {}),
        "entries": entries,
    }
    json.dump(dump, sys.stdout, default=plain, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
