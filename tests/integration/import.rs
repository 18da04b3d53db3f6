//! `beatd import crontab` on realistic crontabs: Debian's `/etc/crontab`, two `cron.d` files and a
//! developer's crontab with settings, macros, names, both day fields and an escaped `%`. What
//! `beatd next` lists for the import must be exactly what the crontab's own lines give, worked
//! out here minute by minute by a matcher that knows nothing of beatd's engine.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::util::Beatd;

const ETC_CRONTAB: &str = "# /etc/crontab: system-wide crontab
# Unlike any other crontab you don't have to run the `crontab'
# command to install the new version when you edit this file
# and files in /etc/cron.d. These files also have username fields,
# that none of the other crontabs do.

SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin

# Example of job definition:
# .---------------- minute (0 - 59)
# |  .------------- hour (0 - 23)
# |  |  .---------- day of month (1 - 31)
# |  |  |  .------- month (1 - 12) OR jan,feb,mar,apr ...
# |  |  |  |  .---- day of week (0 - 6) (Sunday=0 or 7) OR sun,mon,tue,wed,thu,fri,sat
# |  |  |  |  |
# *  *  *  *  * user-name command to be executed
17 *\t* * *\troot    cd / && run-parts --report /etc/cron.hourly
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
47 6\t* * 7\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }
52 6\t1 * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }
#
";

const CRON_D_CERTBOT: &str = "# /etc/cron.d/certbot: crontab entries for the certbot package
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin

0 */12 * * * root test -x /usr/bin/certbot -a \\! -d /run/systemd/system && perl -e 'sleep int(rand(43200))' && certbot -q renew
";

const CRON_D_PHP: &str = "# /etc/cron.d/php@PHP_VERSION@: crontab fragment for PHP
#  This purges session files in session.save_path older than X,
#  where X is defined in seconds as the largest value of
#  session.gc_maxlifetime from all your SAPI php.ini files

09,39 *     * * *     root   [ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; then /usr/lib/php/sessionclean; fi
";

const DEVELOPER: &str = "MAILTO=dev@example.com
CRON_TZ=America/New_York
# backups, weekdays and Sundays
30 2 * * 1-5 $HOME/bin/backup.sh --incremental >> /tmp/backup.log 2>&1
0 3 * * 0 $HOME/bin/backup.sh --full
*/15 9-17 * * mon-fri curl -fsS https://example.com/ping > /dev/null
0 0 1,15 * * tar czf /tmp/archive-$(date +\\%Y\\%m\\%d).tgz $HOME/notes
# both day fields restricted: cron runs on the 13th and on Fridays
5 4 13 * 5 echo thirteenth-or-friday
@daily $HOME/bin/cleanup
@reboot $HOME/bin/start-agent
0 9 * jan,jul * echo half-year
10-50/20 8 * * SUN echo sunday-mornings
TZ=UTC
0 12 * * * echo noon-utc
";

/// The window compared: a week with a new year and no DST change in any zone used.
fn window() -> (DateTime<Utc>, DateTime<Utc>) {
    (Utc.with_ymd_and_hms(2026, 12, 28, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2027, 1, 4, 0, 0, 0).unwrap())
}

/// One cron field's values, as crontab(5) defines them.
fn field(text: &str, lo: u32, hi: u32, names: &[&str]) -> BTreeSet<u32> {
    let value = |s: &str| -> u32 {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .map(|i| i as u32 + lo)
            .unwrap_or_else(|| s.parse().expect("a number"))
    };
    let mut set = BTreeSet::new();
    for part in text.split(',') {
        let (range, step) = part.split_once('/').map_or((part, 1), |(r, s)| (r, s.parse().expect("a step")));
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a), value(b)),
                None if part.contains('/') => (value(r), hi),
                None => (value(r), value(r)),
            },
        };
        set.extend((a..=b).step_by(step));
    }
    set
}

/// Whether the five fields name the local minute `t` (day fields: either, when both are
/// restricted; Sunday is 0 or 7).
fn matches(fields: &[&str], t: &chrono::NaiveDateTime) -> bool {
    const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let dows: BTreeSet<u32> = field(fields[4], 0, 7, DAYS).into_iter().map(|d| d % 7).collect();
    let dom = field(fields[2], 1, 31, &[]).contains(&t.day());
    let dow = dows.contains(&t.weekday().num_days_from_sunday());
    let day = match (fields[2].starts_with('*'), fields[4].starts_with('*')) {
        (false, false) => dom || dow,
        _ => dom && dow,
    };
    field(fields[0], 0, 59, &[]).contains(&t.minute())
        && field(fields[1], 0, 23, &[]).contains(&t.hour())
        && field(fields[3], 1, 12, MONTHS).contains(&t.month())
        && day
}

/// The crontab's fires in the window, by command, worked out from its own lines.
fn expected(crontab: &str, system: bool) -> BTreeMap<String, Vec<DateTime<Utc>>> {
    let (from, until) = window();
    let mut tz: Tz = chrono_tz::UTC;
    let mut fires = BTreeMap::new();
    for line in crontab.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(zone) = line.strip_prefix("CRON_TZ=").or_else(|| line.strip_prefix("TZ=")) {
            tz = zone.parse().expect("a zone");
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0].contains('=') || words[0] == "@reboot" {
            continue;
        }
        let (fields, rest): (Vec<&str>, usize) = match words[0] {
            "@daily" => (vec!["0", "0", "*", "*", "*"], 1),
            "@hourly" => (vec!["0", "*", "*", "*", "*"], 1),
            _ => (words[..5].to_vec(), 5),
        };
        let command = words[rest + usize::from(system)..].join(" ").replace("\\%", "%");
        // As `next` lists them: strictly after --from, up to --until included.
        let mut t = from + chrono::Duration::minutes(1);
        let mut at = Vec::new();
        while t <= until {
            if matches(&fields, &t.with_timezone(&tz).naive_local()) {
                at.push(t);
            }
            t += chrono::Duration::minutes(1);
        }
        fires.insert(command, at);
    }
    fires
}

/// The import's jobs and their fires in the window, by command, from `beatd next`.
fn listed(b: &Beatd, config: &str) -> BTreeMap<String, Vec<DateTime<Utc>>> {
    let table: toml::Table = std::fs::read_to_string(b.path(config)).expect("import").parse().expect("TOML");
    let commands: BTreeMap<String, String> = table["jobs"]
        .as_table()
        .expect("jobs")
        .iter()
        .map(|(name, job)| {
            (name.clone(), job["command"].as_str().expect("command").split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect();
    let (from, until) = window();
    let out = b
        .cmd(&["next", "-c", config, "--from", &from.to_rfc3339(), "--until", &until.to_rfc3339(), "--json"])
        .output()
        .expect("next");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut fires: BTreeMap<String, Vec<DateTime<Utc>>> = commands.values().map(|c| (c.clone(), Vec::new())).collect();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        let at = DateTime::parse_from_rfc3339(v["at"].as_str().expect("at")).expect("time").with_timezone(&Utc);
        fires.get_mut(&commands[v["job"].as_str().expect("job")]).expect("a job").push(at);
    }
    fires
}

fn import(b: &Beatd, name: &str, text: &str, extra: &[&str]) -> String {
    b.write(&format!("{name}.crontab"), text);
    let mut args = vec!["import", "crontab"];
    args.extend_from_slice(extra);
    let file = format!("{name}.crontab");
    args.push(&file);
    let out = b.cmd(&args).output().expect("import");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let config = format!("{name}.toml");
    b.write(&config, &String::from_utf8_lossy(&out.stdout));
    let check = b.cmd(&["check", &config]).output().expect("check");
    assert!(
        check.status.success(),
        "{name}: {}\n{}",
        String::from_utf8_lossy(&check.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    config
}

#[test]
fn imported_crontabs_fire_exactly_when_their_lines_do() {
    let b = Beatd::with_config("");
    for (name, text, system) in [
        ("etc-crontab", ETC_CRONTAB, true),
        ("certbot", CRON_D_CERTBOT, true),
        ("php", CRON_D_PHP, true),
        ("developer", DEVELOPER, false),
    ] {
        let config = import(&b, name, text, if system { &["--system"] } else { &[] });
        let want = expected(text, system);
        let mut got = listed(&b, &config);
        if let Some(reboot) = got.remove("$HOME/bin/start-agent") {
            assert!(reboot.is_empty(), "@reboot runs once at start, never from a schedule");
        }
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{name}: the same commands");
        for (command, at) in &want {
            assert_eq!(&got[command], at, "{name}: {command}");
        }
        let total: usize = want.values().map(Vec::len).sum();
        assert!(total > 0, "{name}: the window has fires");
    }
    // What the import says about the lines it kept.
    let dev = std::fs::read_to_string(b.path("developer.toml")).expect("import");
    assert!(dev.contains("# MAILTO=dev@example.com dropped: beatd does not mail a run's output"), "{dev}");
    assert!(
        dev.contains("# both day fields restricted: cron runs on the 13th and on Fridays\n"),
        "comments are kept:\n{dev}"
    );
    assert!(dev.contains("cron = \"@reboot\""), "{dev}");
    assert!(dev.contains("here they run as beatd's user (`--user NAME` sets one)"), "{dev}");
    assert!(dev.contains("command = \"tar czf /tmp/archive-$(date +%Y%m%d).tgz $HOME/notes\""), "{dev}");
    let sys = std::fs::read_to_string(b.path("etc-crontab.toml")).expect("import");
    assert!(sys.contains("[jobs.run-parts-cron-daily]") && sys.contains("user = \"root\""), "{sys}");
    assert!(
        sys.contains(
            "env = { SHELL = \"/bin/sh\", PATH = \"/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\" }"
        ),
        "{sys}"
    );
}

#[test]
fn a_notifier_replaces_mailto_and_a_bare_percent_is_refused_with_its_place() {
    let b = Beatd::with_config("");
    b.write("mail.crontab", "MAILTO=ops@example.com\n0 * * * * /usr/bin/true\nMAILTO=\"\"\n0 1 * * * quiet\n");
    let out = b.cmd(&["import", "crontab", "--notify", "ops-mail", "mail.crontab"]).output().expect("import");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[jobs.true]\n") && text.contains("notify = \"ops-mail\"\n\n# MAILTO="), "{text}");
    assert!(
        !text[text.find("[jobs.quiet]").expect("quiet")..].contains("notify"),
        "MAILTO=\"\" notifies no one:\n{text}"
    );

    b.write(
        "bad.crontab",
        "# a job with standard input\n0 5 * * * mail -s report root%Hello%\n*/5 * * * mon-fry true\n",
    );
    let out = b.cmd(&["import", "crontab", "bad.crontab"]).output().expect("import");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing half-imported");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.crontab:2:30: cron's % makes the rest of the line the command's standard input"),
        "{err}"
    );
    assert!(err.contains("bad.crontab:3:"), "{err}");
    assert!(err.ends_with("2 lines not imported\n"), "{err}");

    // Standard input, as `crontab -l | beatd import crontab -` gives it.
    let out = b.cmd(&["import", "crontab", "-"]).write_stdin("@hourly date\n").output().expect("import");
    assert!(String::from_utf8_lossy(&out.stdout).contains("# Imported from <stdin>"));
}
