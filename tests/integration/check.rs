//! `beatd check`: good configs, every kind of error with its exact text, and bad input.

use crate::util::Beatd;

#[test]
fn a_good_config_is_ok() {
    let b = Beatd::with_config(
        r#"
[scheduler]
timezone = "Europe/Berlin"

[jobs.nightly-backup]
cron = "30 2 * * *"
timezone = "America/New_York"
action = "command"
command = "echo backup"

[jobs.heartbeat]
every = "30s"
action = "noop"

[jobs.parked]
every = "1h"
enabled = false
action = "noop"
"#,
    );
    b.cmd(&["check", "--config", "beatd.toml"]).assert().success().stdout("ok: 3 jobs (1 disabled)\n").stderr("");
}

#[test]
fn every_error_is_reported_at_once_with_its_position() {
    let b = Beatd::with_config(
        r#"[scheduler]
timezone = "Europe/Berln"

[jobs.typo]
cron = "*/5 * * * *"
action = "comand"
comand = "echo hi"

[jobs.no-schedule]
action = "noop"

[jobs.both]
cron = "0 * * * *"
every = "5m"
action = "noop"

[jobs.bad-cron]
cron = "0 25 * * *"
action = "noop"

[jobs.never]
cron = "0 0 30 2 *"
action = "noop"

[jobs.bad-every]
every = "5 parsecs"
action = "noop"

[jobs.short]
every = "500ms"
action = "noop"

[jobs.wide-offset]
every = "1m"
offset = "2m"
action = "noop"

[jobs.zone]
cron = "0 9 * * *"
timezone = "America/NewYork"
action = "noop"

[jobs.no-action]
every = "1m"

[jobs.cmd]
every = "1m"
action = "command"
comand = "echo"
retires = 3
enabled = "yes"

[jobs.policy]
every = "1m"
action = "noop"
overlap = "queeu"
catch_up = "never"
"#,
    );
    let file = b.config().display().to_string();
    let expected = [
        "2:12: scheduler: unknown time zone \"Europe/Berln\" (did you mean \"Europe/Berlin\"?)",
        "6:10: job \"typo\": unknown action \"comand\" (did you mean \"command\"?)",
        "7:1: job \"typo\": unknown key \"comand\" (did you mean \"command\"?)",
        "9:7: job \"no-schedule\": missing schedule: set \"cron\" or \"every\"",
        "14:1: job \"both\": set either \"cron\" or \"every\", not both",
        "18:11: job \"bad-cron\": invalid cron expression \"0 25 * * *\": hour field: 25 is out of range 0-23",
        "22:8: job \"never\": cron expression \"0 0 30 2 *\" never fires",
        "26:9: job \"bad-every\": invalid duration \"5 parsecs\" for \"every\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)",
        "30:9: job \"short\": \"every\" must be at least 1s, not \"500ms\"",
        "35:10: job \"wide-offset\": \"offset\" must be smaller than \"every\" (1m)",
        "40:12: job \"zone\": unknown time zone \"America/NewYork\" (did you mean \"America/New_York\"?)",
        "43:7: job \"no-action\": missing key \"action\" (one of: command, noop, cleanup, http_check, tcp_check, report, celery, push, sql, sql_check)",
        "46:7: job \"cmd\": missing key \"command\"",
        "49:1: job \"cmd\": unknown key \"comand\" (did you mean \"command\"?)",
        "50:1: job \"cmd\": unknown key \"retires\" (did you mean \"retries\"?)",
        "51:11: job \"cmd\": \"enabled\" must be true or false, not a string",
        "56:11: job \"policy\": unknown overlap policy \"queeu\" (did you mean \"queue\"?)",
        "57:12: job \"policy\": unknown catch_up \"never\" (one of: skip, latest, all)",
    ];
    let mut stderr: String = expected.iter().map(|l| format!("{file}:{l}\n")).collect();
    stderr.push_str(&format!("{} errors\n", expected.len()));
    b.cmd(&["check", "--config", &file]).assert().code(1).stdout("").stderr(stderr);
}

#[test]
fn a_missing_file_names_the_path_tried() {
    let b = Beatd::with_config("");
    b.cmd(&["check"])
        .assert()
        .code(1)
        .stderr("/etc/beatd/beatd.toml: cannot read config: No such file or directory (os error 2)\n1 error\n");
    b.cmd(&["check"])
        .env("BEATD_CONFIG", "nowhere.toml")
        .assert()
        .code(1)
        .stderr("nowhere.toml: cannot read config: No such file or directory (os error 2)\n1 error\n");
}

#[test]
fn malformed_toml_is_located() {
    let b = Beatd::with_config("[jobs.a]\ncron = \"* * * * *\naction = \"noop\"\n");
    let out = b.cmd(&["check", "-c", "beatd.toml"]).assert().code(1).get_output().stderr.clone();
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.starts_with("beatd.toml:2:"), "{text}");
    assert!(text.contains("invalid TOML:"), "{text}");
}

#[test]
fn invalid_utf8_is_located() {
    let b = Beatd::with_config("");
    std::fs::write(b.config(), b"[jobs.a]\nevery = \"1m\"\naction = \"no\xffop\"\n").expect("write");
    b.cmd(&["check", "-c", "beatd.toml"])
        .assert()
        .code(1)
        .stderr("beatd.toml:3:13: invalid UTF-8: a config must be UTF-8 text\n1 error\n");
}

#[test]
fn a_ten_megabyte_config_is_refused() {
    let b = Beatd::with_config("");
    let mut big = String::from("# padding\n");
    while big.len() < 10_000_000 {
        big.push_str("# ........................................................................\n");
    }
    std::fs::write(b.config(), big).expect("write");
    b.cmd(&["check", "-c", "beatd.toml"])
        .assert()
        .code(1)
        .stderr("beatd.toml: config is larger than the 4 MiB limit\n1 error\n");
}

#[test]
fn a_job_name_with_spaces_is_refused() {
    let b = Beatd::with_config("[jobs.\"nightly backup\"]\nevery = \"1m\"\naction = \"noop\"\n");
    b.cmd(&["check", "-c", "beatd.toml"])
        .assert()
        .code(1)
        .stderr("beatd.toml:1:7: job \"nightly backup\": job names may only contain letters, digits, \".\", \"_\" and \"-\"\n1 error\n");
}

#[test]
fn wrong_types_and_shapes_never_panic() {
    for text in [
        "jobs = 3",
        "[jobs]\na = 1",
        "[scheduler]\ntimezone = 5",
        "[jobs.a]\ncron = [\"* * * * *\"]\naction = \"noop\"",
        "[jobs.a]\nevery = \"1m\"\naction = \"command\"\ncommand = \"x\"\nenv = { A = 1 }",
        "[jobs.a]\ncron = \"\"\naction = \"noop\"",
        "[jobs.a]\ncron = \"@every\"\naction = \"noop\"",
        "[jobs.a]\nevery = \"99999999999999999999d\"\naction = \"noop\"",
        "\u{feff}[jobs.a]",
        "[[jobs]]",
    ] {
        let b = Beatd::with_config(text);
        let out = b.cmd(&["check", "-c", "beatd.toml"]).assert().code(1).get_output().clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("beatd.toml:"), "{text:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{text:?}: {stderr}");
    }
}

#[test]
fn cleanup_refuses_the_root_and_paths_that_are_not_folders() {
    let b = Beatd::with_config(
        "[jobs.root]\nevery = \"1d\"\naction = \"cleanup\"\npath = \"/\"\nolder_than = \"1d\"\n\n[jobs.file]\nevery = \"1d\"\naction = \"cleanup\"\npath = \"beatd.toml\"\nolder_than = \"1d\"\n",
    );
    let file = b.config().display().to_string();
    b.cmd(&["check", "-c", &file]).assert().code(1).stderr(format!(
        "{file}:4:8: job \"root\": refusing to clean up \"/\"\n{file}:10:8: job \"file\": {} is not a folder\n2 errors\n",
        b.path("beatd.toml").display()
    ));
}

/// A main config with `include = ["conf.d/*.toml"]` and the drop-ins given as (name, text).
fn with_dropins(main_jobs: &str, dropins: &[(&str, &str)]) -> Beatd {
    let b = Beatd::with_config(&format!(
        "[scheduler]\ntimezone = \"UTC\"\ninclude = [\"conf.d/*.toml\"]\n\n[notifiers.ops]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n{main_jobs}"
    ));
    std::fs::create_dir(b.path("conf.d")).expect("conf.d");
    for (name, text) in dropins {
        std::fs::write(b.path("conf.d").join(name), text).expect("drop-in");
    }
    b
}

#[test]
fn drop_ins_are_merged_and_may_use_the_main_files_notifiers() {
    let b = with_dropins(
        "\n[jobs.main-job]\nevery = \"1m\"\naction = \"noop\"\n",
        &[
            ("a.toml", "[jobs.from-a]\nevery = \"5m\"\naction = \"noop\"\nnotify = \"ops\"\n"),
            ("b.toml", "[jobs.from-b]\ncron = \"0 3 * * *\"\naction = \"noop\"\n"),
            ("notes.txt", "not toml, and not included"),
        ],
    );
    b.cmd(&["check", "--config", "beatd.toml"]).assert().success().stdout("ok: 3 jobs\n");
    let out = b.cmd(&["next", "--config", "beatd.toml", "--count", "3", "--json"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for job in ["main-job", "from-a", "from-b"] {
        assert!(text.contains(job), "{job} missing from {text}");
    }
}

#[test]
fn names_may_be_defined_in_a_later_file_than_the_job_that_uses_them() {
    // Each file is read and dropped before the next (a large schedule's documents are not
    // all held at once), so a name is checked only once every file is read.
    let b = with_dropins(
        "\n[jobs.main-job]\nevery = \"1m\"\naction = \"noop\"\nnotify = \"later\"\n",
        &[
            (
                "a.toml",
                "[jobs.weekly]\ncron = \"0 9 * * 1\"\naction = \"report\"\njobs = [\"main-job\", \"from-b\"]\noutput_dir = \".\"\n",
            ),
            (
                "b.toml",
                "[notifiers.later]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n[jobs.from-b]\nevery = \"5m\"\naction = \"noop\"\n",
            ),
        ],
    );
    b.cmd(&["check", "--config", "beatd.toml"]).assert().success().stdout("ok: 3 jobs\n");
    std::fs::write(b.path("conf.d/b.toml"), "[notifiers.latr]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n")
        .expect("b.toml");
    let out = b.cmd(&["check", "--config", "beatd.toml"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(
        stderr,
        "beatd.toml:12:10: job \"main-job\": no notifier \"later\" (define it as [notifiers.later]) (did you mean \"latr\"?)\n\
         conf.d/a.toml:4:21: job \"weekly\": no job \"from-b\" to report on\n\
         2 errors\n"
    );
}

/// Each drop-in is read just before its turn and let go after it: one that cannot be read (not
/// UTF-8) is reported among the others' errors, the files after it are still read, and
/// positions in files already let go stay exact.
#[test]
fn a_drop_in_that_cannot_be_read_is_reported_among_the_others_errors() {
    let b = with_dropins(
        "",
        &[
            (
                "a.toml",
                "[jobs.uses-later]\nevery = \"5m\"\naction = \"noop\"\nnotify = \"from-c\"\n\n[jobs.bad]\nevery = \"5m\"\naction = \"nop\"\n",
            ),
            (
                "c.toml",
                "[notifiers.from-c]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/c\"\n[jobs.uses-missing]\nevery = \"1m\"\naction = \"noop\"\nnotify = \"nowhere\"\n",
            ),
        ],
    );
    std::fs::write(b.path("conf.d/b.toml"), b"[jobs.x]\nevery = \"1m\"\naction = \"no\xffop\"\n").expect("b.toml");
    let out = b.cmd(&["check", "--config", "beatd.toml"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(
        stderr,
        "conf.d/a.toml:8:10: job \"bad\": unknown action \"nop\" (did you mean \"noop\"?)\n\
         conf.d/c.toml:7:10: job \"uses-missing\": no notifier \"nowhere\" (define it as [notifiers.nowhere])\n\
         conf.d/b.toml:3:13: invalid UTF-8: a config must be UTF-8 text\n\
         3 errors\n"
    );
}

#[test]
fn a_job_defined_in_two_files_names_both() {
    let b = with_dropins(
        "\n[jobs.report]\nevery = \"1m\"\naction = \"noop\"\n",
        &[
            ("a.toml", "[jobs.report]\nevery = \"5m\"\naction = \"noop\"\n"),
            ("b.toml", "[jobs.other]\nevery = \"5m\"\naction = \"noop\"\n\n[jobs.other]\n"),
        ],
    );
    let out = b.cmd(&["check", "--config", "beatd.toml"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("conf.d/a.toml:1:7: job \"report\": defined twice: also at beatd.toml:9:7"), "{stderr}");
}

#[test]
fn drop_ins_report_their_own_errors_and_may_not_set_the_scheduler() {
    let b = with_dropins(
        "",
        &[(
            "bad.toml",
            "[scheduler]\ntimezone = \"UTC\"\n\n[jobs.typo]\nevery = \"5m\"\naction = \"nop\"\nnotify = \"opz\"\n",
        )],
    );
    let out = b.cmd(&["check", "--config", "beatd.toml"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(
        stderr,
        "conf.d/bad.toml:1:2: [scheduler] may only be set in the main config, beatd.toml\n\
         conf.d/bad.toml:6:10: job \"typo\": unknown action \"nop\" (did you mean \"noop\"?)\n\
         conf.d/bad.toml:7:10: job \"typo\": no notifier \"opz\" (define it as [notifiers.opz]) (did you mean \"ops\"?)\n\
         3 errors\n"
    );
}

#[test]
fn an_include_folder_that_does_not_exist_is_an_error() {
    let b = Beatd::with_config("[scheduler]\ninclude = [\"confd/*.toml\", \"/etc/x/*.toml\"]\n");
    let out = b.cmd(&["check", "--config", "beatd.toml"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("beatd.toml:2:28: scheduler: include \"/etc/x/*.toml\" must stay inside the config's folder"),
        "{stderr}"
    );
    assert!(stderr.contains("beatd.toml: include \"confd/*.toml\": no folder confd"), "{stderr}");
}

#[test]
fn broker_and_queue_job_errors_never_show_a_password() {
    let b = Beatd::with_config(
        r#"[brokers.main]
url = "redis://:hunter2@127.0.0.1:6379/0"

[brokers.odd]
url = "kafka://user:hunter2@127.0.0.1:9092"

[jobs.send]
every = "1m"
action = "celery"
broker = "mian"
task = "tasks.x"
priority = 12
args = { a = 1 }

[jobs.beat]
every = "1m"
action = "push"
broker = "main"
on_broker_down = "ignore"
"#,
    );
    let out = b.cmd(&["check", "--config", "beatd.toml"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(
        stderr,
        "beatd.toml:5:7: broker \"odd\": unsupported broker scheme \"kafka\" (one of: redis://, rediss://, unix://, amqp://, amqps://)\n\
         beatd.toml:10:10: job \"send\": no broker \"mian\" (define it as [brokers.mian]) (did you mean \"main\"?)\n\
         beatd.toml:12:12: job \"send\": \"priority\" must be 0 to 9, not 12\n\
         beatd.toml:13:8: job \"send\": \"args\" must be a list, such as [1, \"two\"]\n\
         beatd.toml:15:7: job \"beat\": missing key \"queue\"\n\
         beatd.toml:19:18: job \"beat\": unknown on_broker_down \"ignore\" (one of: outbox, drop)\n\
         6 errors\n"
    );
}

#[test]
fn infinity_and_nan_are_refused_where_json_cannot_carry_them() {
    let b = Beatd::with_config(
        r#"[brokers.main]
url = "redis://127.0.0.1:6379/0"

[jobs.send]
every = "1m"
action = "celery"
broker = "main"
task = "tasks.x"
args = [1.5, inf]
kwargs = { ratio = { limit = nan } }

[jobs.beat]
every = "1m"
action = "push"
broker = "main"
queue = "beats"
payload = { n = -inf, when = 2026-11-24T03:00:00Z }
"#,
    );
    b.cmd(&["check", "--config", "beatd.toml"]).assert().failure().stdout("").stderr(
        "beatd.toml:9:14: job \"send\": \"args\" holds inf, which JSON cannot carry (a worker would get null)\n\
         beatd.toml:10:30: job \"send\": \"kwargs\" holds nan, which JSON cannot carry (a worker would get null)\n\
         beatd.toml:17:17: job \"beat\": \"payload\" holds -inf, which JSON cannot carry (a worker would get null)\n\
         3 errors\n",
    );
}

#[test]
fn amqp_urls_in_every_form_kombu_reads_are_valid() {
    let forms = ["5672", "5672/", "5672//", "5672/%2F", "5672/prod"];
    let config: String = forms
        .iter()
        .enumerate()
        .map(|(i, f)| format!("[brokers.b{i}]\nurl = \"amqp://guest:guest@127.0.0.1:{f}\"\n"))
        .collect();
    let b = Beatd::with_config(&format!("{config}[jobs.a]\nevery = \"1m\"\naction = \"noop\"\n"));
    b.cmd(&["check", "--config", "beatd.toml"]).assert().success().stdout("ok: 1 job\n");
}

#[test]
fn the_example_config_and_every_commented_example_in_it_are_valid() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/beatd.toml")).expect("example");
    // Uncomment the TOML lines (a table header or `key = value`), not the prose.
    fn toml_line(l: &str) -> Option<&str> {
        l.strip_prefix("# ").filter(|rest| {
            rest.starts_with('[')
                || rest.split_once(" = ").is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        })
    }
    let uncommented: String = example
        .lines()
        .map(|l| toml_line(l).unwrap_or(l))
        .filter(|l| !l.starts_with("include =") && !l.starts_with("token_file ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(uncommented.contains("[jobs.celery-cleanup]") && uncommented.contains("[brokers.main]"));
    let b = Beatd::with_config(&uncommented);
    std::fs::create_dir_all(b.path("var/uploads")).expect("cleanup folder");
    std::fs::write(b.path("smtp-password"), "secret\n").expect("the mail notifier's password");
    let out = b.cmd(&["check", "--config", "beatd.toml"]).output().expect("check");
    assert!(out.status.success(), "{}\n{uncommented}", String::from_utf8_lossy(&out.stderr));
    let jobs = example.lines().filter(|l| toml_line(l).unwrap_or(l).starts_with("[jobs.")).count();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("ok: {jobs} jobs\n"));
}
