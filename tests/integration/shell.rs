//! What a shell user and a packager see: `--version`, the completion scripts driven by a real
//! bash, `check FILE`, the man pages as groff and man render them.

use std::process::Command;

use crate::util::Beatd;

#[test]
fn version_names_the_commit() {
    let out = Beatd::with_config("").cmd(&["--version"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("beatd {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(out.status.success() && text.starts_with(&want) && text.trim_end().ends_with(')'), "{text}");
    // A checkout builds with its commit: hex, maybe marked modified.
    let commit = text.trim_end().trim_end_matches(')').rsplit(' ').next().unwrap_or("");
    let hex = commit.trim_end_matches("-modified");
    assert!(hex.len() >= 7 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{text}");
}

#[test]
fn check_takes_the_file_as_an_argument_too() {
    let b = Beatd::with_config("[jobs.a]\nevery = \"1m\"\naction = \"noop\"\n");
    let out = b.cmd(&["check", "beatd.toml"]).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok: 1 job\n");
    b.write("bad.toml", "[jobs.a]\nevery = \"often\"\naction = \"noop\"\n");
    let out = b.cmd(&["check", "bad.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("bad.toml:2:9: job \"a\": "), "{out:?}");
    let both = b.cmd(&["check", "bad.toml", "-c", "beatd.toml"]).output().expect("run");
    assert_eq!(both.status.code(), Some(2), "a file and --config is a usage error");
}

/// What bash offers after `line` (the word being completed is the last, maybe empty), with
/// the script `beatd completions bash` prints loaded and `beatd` on the PATH.
fn bash_completes(b: &Beatd, line: &str) -> Vec<String> {
    let script = b.cmd(&["completions", "bash"]).output().expect("run");
    assert!(script.status.success());
    b.write("complete.bash", &String::from_utf8_lossy(&script.stdout));
    let bin = assert_cmd::cargo::cargo_bin("beatd");
    let path = format!("{}:{}", bin.parent().expect("dir").display(), std::env::var("PATH").unwrap_or_default());
    let words: Vec<&str> = line.split(' ').collect();
    let driver = format!(
        "source complete.bash\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\nCOMP_TYPE=9\n\
         _clap_complete_beatd beatd '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words.get(words.len().wrapping_sub(2)).copied().unwrap_or(""),
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(driver)
        .current_dir(b.path(""))
        .env("PATH", path)
        .env_remove("BEATD_CONFIG")
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(|l| l.trim().to_string()).collect()
}

#[test]
fn bash_completes_subcommands_and_the_configs_job_names() {
    let b = Beatd::with_config(
        "[jobs.cleanup-tmp]\nevery = \"1h\"\naction = \"noop\"\n\
         [jobs.cleanup-logs]\ncron = \"0 3 * * *\"\naction = \"noop\"\n\
         [jobs.report]\nevery = \"1d\"\naction = \"noop\"\n",
    );
    let subcommands = bash_completes(&b, "beatd tr");
    assert_eq!(subcommands, ["trigger"]);
    for verb in ["trigger", "pause", "resume"] {
        let mut names = bash_completes(&b, &format!("beatd {verb} -c beatd.toml cleanup-"));
        names.sort();
        assert_eq!(names, ["cleanup-logs", "cleanup-tmp"], "{verb}");
    }
    assert_eq!(bash_completes(&b, "beatd trigger --config=beatd.toml r"), ["report"]);
    // Another tool's COMPLETE in the environment does not make beatd a completion engine.
    let out = b.cmd(&["check", "beatd.toml"]).env("COMPLETE", "bash").output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok: 3 jobs\n");
    // A config that cannot be read offers nothing, and says nothing into the prompt.
    assert!(bash_completes(&b, "beatd trigger -c missing.toml c").is_empty());
    for shell in ["zsh", "fish"] {
        let out = b.cmd(&["completions", shell]).output().expect("run");
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("BEATD_COMPLETE="), "{shell}");
    }
}

#[test]
fn man_pages_render_cleanly_and_the_config_page_has_every_key() {
    let b = Beatd::with_config("");
    let out = b.cmd(&["man", "man"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&out.stdout);
    for page in ["beatd.1", "beatd-run.1", "beatd-check.1", "beatd-trigger.1", "beatd-completions.1", "beatd.toml.5"] {
        assert!(listed.lines().any(|l| l.ends_with(&format!("/{page}"))), "{page} missing from {listed}");
    }
    for page in std::fs::read_dir(b.path("man")).expect("pages") {
        let page = page.expect("entry").path();
        // groff with every warning on: a page it complains about renders wrongly somewhere.
        let check = Command::new("groff").args(["-man", "-ww", "-z"]).arg(&page).output().expect("groff runs");
        assert!(
            check.status.success() && check.stderr.is_empty(),
            "{}: {}",
            page.display(),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let rendered = Command::new("man")
        .arg("-l")
        .arg(b.path("man/beatd.toml.5"))
        .env("MANWIDTH", "200")
        .output()
        .expect("man runs");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("beatd.toml - the configuration of the beatd scheduler"), "{text}");
    for section in beatd::config::schema::reference() {
        assert!(text.contains(section.heading), "{}", section.heading);
        for (key, _, _) in &section.keys {
            assert!(text.contains(&format!("{key} (")), "{key} is not in beatd.toml(5)");
        }
    }
    assert!(
        text.contains("every (duration)")
            && text.contains("overlap (one of: skip, queue, allow, replace, default \"skip\")"),
        "{text}"
    );
}
