//! `beatd import celery` on a real Celery app (the tests' virtualenv): the seed's three entries
//! and edge cases. Its crontab entries must fire when Celery's own `crontab.remaining_estimate`
//! says they are due, over a week, and an unmodified worker must run what beatd sends for the
//! imported jobs.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::util::{Beatd, Reaped, RedisServer, celery_bin, free_port, venv_python, wait_for};

const APP: &str = r#"import os
from datetime import timedelta
from celery import Celery
from celery.schedules import crontab

app = Celery("proj", broker=os.environ.get("BROKER", "redis://:s3cret-broker@127.0.0.1:6379/0"), include=["proj.tasks"])
app.conf.timezone = "Europe/Berlin"
app.conf.broker_transport_options = {"priority_steps": list(range(10)), "sep": ":", "visibility_timeout": 3600}
app.conf.beat_schedule = {
    # The seed's three.
    "cleanup-every-day": {"task": "proj.tasks.record", "schedule": crontab(minute=0, hour=2), "args": ("cleanup",)},
    "weekly report": {"task": "proj.tasks.record", "schedule": crontab(minute=0, hour=9, day_of_week=1), "args": ("report",)},
    "check-status": {"task": "proj.tasks.record", "schedule": 300.0, "args": ("check",)},
    # Edge cases.
    "sets": {"task": "proj.tasks.record", "schedule": crontab(minute={0, 30}, hour={8, 12, 16}), "args": ("sets",)},
    "quarter hours": {"task": "proj.tasks.record", "schedule": crontab(minute="*/15", hour="10-11"), "args": ("quarters",)},
    "weekday mornings": {
        "task": "proj.tasks.record", "schedule": crontab(minute=30, hour=7, day_of_week="mon-fri"),
        "args": ("weekdays", 2), "kwargs": {"verbose": True, "tags": ["a", "b"]},
        "options": {"queue": "reports", "priority": 7, "expires": 600},
    },
    "friday the 13th": {"task": "proj.tasks.record", "schedule": crontab(minute=0, hour=9, day_of_month=13, day_of_week=5), "args": ("f13",)},
    "quarterly": {"task": "proj.tasks.record", "schedule": crontab(minute=5, hour=0, day_of_month=1, month_of_year="1,4,7,10"), "args": ("q",)},
    "every 90 s": {"task": "proj.tasks.record", "schedule": timedelta(seconds=90), "args": ("td",)},
    "every 2 s": {"task": "proj.tasks.record", "schedule": timedelta(seconds=2), "args": ("fast",)},
}
"#;

const TASKS: &str = r#"import json
from proj.celery import app

@app.task(name="proj.tasks.record", bind=True)
def record(self, *args, **kwargs):
    with open("record.jsonl", "a") as f:
        f.write(json.dumps({"id": self.request.id, "queue": self.request.delivery_info.get("routing_key"), "args": args, "kwargs": kwargs}) + "\n")
"#;

const REFUSED: &str = r#"from celery import Celery
from celery.schedules import solar, schedule
from datetime import timedelta

app = Celery("refused", broker="redis://127.0.0.1:6379/0")
app.conf.beat_schedule = {
    "at sunrise": {"task": "t.sun", "schedule": solar("sunrise", 52.5, 13.4)},
    "relative": {"task": "t.rel", "schedule": schedule(timedelta(minutes=10), relative=True)},
    "fine": {"task": "t.ok", "schedule": 60},
}
"#;

/// Celery's own answer: for each crontab entry, its fires in (from, until], from
/// `remaining_estimate` asked at each fire in turn (the clock set to that fire).
const CELERY_FIRES: &str = r#"import json, sys
from datetime import datetime, timezone
from celery.schedules import crontab
from proj.celery import app

start = datetime.fromisoformat(sys.argv[1]).astimezone(app.timezone)
until = datetime.fromisoformat(sys.argv[2]).astimezone(app.timezone)
out = {}
for name, entry in app.conf.beat_schedule.items():
    s = entry["schedule"]
    if not isinstance(s, crontab):
        continue
    fires, t = [], start
    while True:
        probe = crontab(minute=s._orig_minute, hour=s._orig_hour, day_of_week=s._orig_day_of_week,
                        day_of_month=s._orig_day_of_month, month_of_year=s._orig_month_of_year,
                        nowfun=lambda t=t: t, app=app)
        nxt = t + probe.remaining_estimate(t)
        if nxt > until:
            break
        fires.append(nxt.astimezone(timezone.utc).isoformat())
        t = nxt
    out[name] = fires
print(json.dumps(out))
"#;

fn project(b: &Beatd) {
    std::fs::create_dir_all(b.path("proj")).expect("proj");
    std::fs::write(b.path("proj/__init__.py"), "").expect("init");
    std::fs::write(b.path("proj/celery.py"), APP).expect("app");
    std::fs::write(b.path("proj/tasks.py"), TASKS).expect("tasks");
    std::fs::write(b.path("proj/refused.py"), REFUSED).expect("refused");
}

fn import(b: &Beatd, app: &str) -> std::process::Output {
    let python = venv_python();
    b.cmd(&["import", "celery", "--app", app, "--python", python.to_str().expect("utf-8")])
        .current_dir(b.path(""))
        .env_remove("BROKER")
        .output()
        .expect("import")
}

#[test]
fn an_imported_beat_schedule_fires_when_celery_says_and_a_worker_runs_it() {
    let b = Beatd::with_config("");
    project(&b);
    let out = import(&b, "proj.celery:app");
    let config = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}\n{config}", String::from_utf8_lossy(&out.stderr));
    assert!(!config.contains("s3cret-broker") && config.contains("password was left out"), "{config}");
    assert!(
        config.contains("transport_options = { priority_steps = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], sep = \":\" }"),
        "{config}"
    );
    for (job, want) in [
        ("cleanup-every-day", "cron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n"),
        ("weekly-report", "cron = \"0 9 * * 1\"\n"),
        ("check-status", "every = \"5m\"\n"),
        ("sets", "cron = \"0,30 8,12,16 * * *\"\n"),
        ("quarter-hours", "cron = \"*/15 10-11 * * *\"\n"),
        ("friday-the-13th", "cron = \"0 9 13 * 5\"\nday_match = \"both\""),
        ("every-90-s", "every = \"90s\"\n"),
    ] {
        assert!(config.contains(&format!("[jobs.{job}]\n{want}")), "{job}: {want}\n{config}");
    }
    assert!(
        config.contains("args = [\"weekdays\", 2]\nkwargs = { tags = [\"a\", \"b\"], verbose = true }\nqueue = \"reports\"\nexpires = \"10m\"\npriority = 7\n"),
        "{config}"
    );

    // A week with a Friday the 13th and a month's first day, in the app's zone.
    let (from, until) = ("2026-11-09T00:00:00+00:00", "2026-11-16T00:00:00+00:00");
    b.write("import.toml", &config);
    let check = b.cmd(&["check", "import.toml"]).output().expect("check");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let celery = Command::new(venv_python())
        .args(["-c", CELERY_FIRES, from, until])
        .current_dir(b.path(""))
        .output()
        .expect("python");
    assert!(celery.status.success(), "{}", String::from_utf8_lossy(&celery.stderr));
    let want: BTreeMap<String, Vec<String>> = serde_json::from_slice(&celery.stdout).expect("JSON");
    let next =
        b.cmd(&["next", "-c", "import.toml", "--from", from, "--until", until, "--json"]).output().expect("next");
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&next.stdout).lines() {
        let v: Value = serde_json::from_str(line).expect("JSON");
        let at = DateTime::parse_from_rfc3339(v["at"].as_str().expect("at")).expect("time").with_timezone(&Utc);
        got.entry(v["job"].as_str().expect("job").to_string()).or_default().push(at.to_rfc3339());
    }
    let slug = |name: &str| beatd::import::slugify(name);
    let mut compared = 0;
    for (entry, fires) in &want {
        let ours = got.get(&slug(entry)).cloned().unwrap_or_default();
        let theirs: Vec<String> = fires
            .iter()
            .map(|f| DateTime::parse_from_rfc3339(f).expect("time").with_timezone(&Utc).to_rfc3339())
            .collect();
        assert_eq!(ours, theirs, "{entry}");
        compared += theirs.len();
    }
    assert_eq!(want.len(), 7, "every crontab entry was compared: {want:?}");
    assert!(want["friday the 13th"].len() == 1 && compared > 100, "{want:?}");

    // beatd sends the imported jobs' messages to a real Redis; an unmodified worker runs them.
    let redis = RedisServer::start();
    let port = free_port();
    let url = redis.url();
    b.write("import.toml", &config.replace("url = \"redis://127.0.0.1:6379/0\"", &format!("url = \"{url}\"")));
    b.write("beatd.toml", &format!("[scheduler]\ninclude = [\"import.toml\"]\n[api]\nlisten = \"127.0.0.1:{port}\"\n"));
    let log = std::fs::File::create(b.path("worker.log")).expect("log");
    let worker = Command::new(celery_bin())
        .current_dir(b.path(""))
        .env("BROKER", &url)
        .args(["-A", "proj.celery:app", "worker", "-Q", "celery,reports", "--pool", "solo", "--loglevel", "INFO"])
        .args(["--without-heartbeat", "--without-gossip", "--without-mingle"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("worker");
    let _worker = Reaped(worker);
    let d = b.run(&[]);
    let api = d.api();
    assert_eq!(api.post("/api/jobs/weekday-mornings/run").0, 202);
    let records = || {
        crate::util::lines(&b.path("record.jsonl"))
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
            .collect::<Vec<_>>()
    };
    let worker_log = || std::fs::read_to_string(b.path("worker.log")).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(40), || {
            let r = records();
            r.iter().filter(|x| x["args"][0] == "fast").count() >= 2 && r.iter().any(|x| x["args"][0] == "weekdays")
        }),
        "{:#?}\n{}\n{}",
        records(),
        worker_log(),
        b.log()
    );
    let weekdays = records().into_iter().find(|x| x["args"][0] == "weekdays").expect("weekdays");
    assert_eq!(weekdays["args"], serde_json::json!(["weekdays", 2]));
    assert_eq!(weekdays["kwargs"], serde_json::json!({"tags": ["a", "b"], "verbose": true}));
    assert_eq!(weekdays["queue"], "reports");
}

#[test]
fn solar_and_relative_entries_are_refused_with_their_names_and_why() {
    let b = Beatd::with_config("");
    project(&b);
    let out = import(&b, "proj.refused:app");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing half-imported");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proj.refused:app: entry \"at sunrise\": solar(\"sunrise\", ...) follows the sun"), "{err}");
    assert!(err.contains("proj.refused:app: entry \"relative\": relative=True"), "{err}");
    assert!(err.ends_with("2 entries not imported\n"), "{err}");
    // An app that does not load says why, from Python's own error.
    let out = import(&b, "proj.nowhere:app");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not load proj.nowhere:app: "), "{out:?}");
    // A dump works the same as the app it came from.
    let dump = Command::new(venv_python())
        .args(["-c", beatd::import::celery::DUMP_PROGRAM, "proj.celery:app"])
        .current_dir(b.path(""))
        .env_remove("BROKER")
        .output()
        .expect("dump");
    b.write("dump.json", &String::from_utf8_lossy(&dump.stdout));
    let from_json = b.cmd(&["import", "celery", "--json", "dump.json"]).output().expect("import");
    assert!(from_json.status.success(), "{}", String::from_utf8_lossy(&from_json.stderr));
    let from_app = import(&b, "proj.celery:app");
    let body =
        |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&from_json), body(&from_app), "the same config, but for the source named in its first line");
}
