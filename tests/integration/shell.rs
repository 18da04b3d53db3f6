//! What a shell user and a packager see: `--version`, the completion scripts driven by a real
//! bash, `check FILE`.

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
    // A config that cannot be read offers nothing, and says nothing into the prompt.
    assert!(bash_completes(&b, "beatd trigger -c missing.toml c").is_empty());
    for shell in ["zsh", "fish"] {
        let out = b.cmd(&["completions", shell]).output().expect("run");
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("COMPLETE="), "{shell}");
    }
}
