//! beatd runs as root: each promise here is tried the way a hostile local user, a web page in
//! the operator's browser, or a flood of connections would try it, against the real binary.
//!
//! Tests that need a second account (a stranger) or file ownership run as root, as CI does,
//! and make the account themselves.

use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;

use crate::util::{Beatd, Running, free_port, history, wait_for};

/// A file last modified `days` ago.
fn old_file(path: &Path, days: u64) {
    std::fs::write(path, "old").expect("write");
    let when = SystemTime::now() - Duration::from_secs(days * 86_400);
    std::fs::File::options().write(true).open(path).expect("open").set_modified(when).expect("mtime");
}

fn check_stderr(b: &Beatd) -> String {
    let out = b.cmd(&["check", "-c", "beatd.toml"]).output().expect("check");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn cleanup_job(name: &str, path: &str) -> String {
    format!("[jobs.{name}]\nevery = \"1s\"\naction = \"cleanup\"\npath = \"{path}\"\nolder_than = \"1d\"\n")
}

#[test]
fn every_spelling_of_a_linked_cleanup_path_is_refused_by_check() {
    let b = Beatd::with_config("");
    let real = b.path("real");
    std::fs::create_dir_all(real.join("sub")).expect("mkdir");
    symlink(&real, b.path("link")).expect("link");
    symlink("/", b.path("rootlink")).expect("rootlink");
    let d = b.dir.path().display().to_string();
    let forms = [
        format!("{d}/link"),
        format!("{d}/link/"),
        format!("{d}/link/."),
        format!("{d}/link/sub"),
        format!("{d}/rootlink/."),
        format!("{d}/rootlink/"),
        "/proc/self/root/".to_string(),
        "/proc/1/cwd/".to_string(),
        "/tmp/..".to_string(),
        "//.".to_string(),
    ];
    let config: String = forms.iter().enumerate().map(|(i, p)| cleanup_job(&format!("c{i}"), p)).collect();
    b.write("beatd.toml", &config);
    let stderr = check_stderr(&b);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), forms.len() + 1, "{stderr}");
    let link = format!(
        "{d}/link is a symbolic link (to {}); beatd follows no link in this path: name the real folder",
        real.display()
    );
    let rootlink =
        format!("{d}/rootlink is a symbolic link (to /); beatd follows no link in this path: name the real folder");
    for (i, line) in lines[..4].iter().enumerate() {
        assert!(line.ends_with(&format!("job \"c{i}\": {link}")), "{line}");
    }
    for (i, line) in lines[4..6].iter().enumerate() {
        assert!(line.ends_with(&format!("job \"c{}\": {rootlink}", i + 4)), "{line}");
    }
    // /proc/self points at the checking process: its number differs at every run.
    assert!(lines[6].contains("job \"c6\": /proc/self is a symbolic link (to "), "{}", lines[6]);
    assert!(lines[7].contains("job \"c7\": /proc/1/cwd is a symbolic link"), "{}", lines[7]);
    assert!(lines[8].ends_with("job \"c8\": refusing to clean up \"/\""), "{}", lines[8]);
    assert!(lines[9].ends_with("job \"c9\": refusing to clean up \"/\""), "{}", lines[9]);
    assert_eq!(lines[10], "10 errors");
}

#[test]
fn a_link_swapped_in_after_check_is_refused_at_run_time_and_nothing_behind_it_is_deleted() {
    let b = Beatd::with_config("");
    // The folder the config names, real at check time...
    std::fs::create_dir_all(b.path("uploads")).expect("mkdir");
    std::fs::create_dir_all(b.path("parent/inner")).expect("mkdir");
    // ...and what an attacker wants deleted.
    std::fs::create_dir_all(b.path("precious/inner")).expect("mkdir");
    old_file(&b.path("precious/keep.db"), 30);
    old_file(&b.path("precious/inner/keep.db"), 30);
    b.write(
        "beatd.toml",
        &(cleanup_job("last", &b.path("uploads").display().to_string())
            + &cleanup_job("middle", &b.path("parent/inner").display().to_string())),
    );
    b.cmd(&["check", "-c", "beatd.toml"]).assert().success();
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(5), || !history(&b, "last").is_empty()), "{}", b.log());
    // The swaps: the last component, and a component in the middle.
    std::fs::rename(b.path("uploads"), b.path("uploads.orig")).expect("rename");
    symlink(b.path("precious"), b.path("uploads")).expect("link");
    std::fs::rename(b.path("parent"), b.path("parent.orig")).expect("rename");
    symlink(b.path("precious"), b.path("parent")).expect("link");
    let refused = |job: &str| {
        history(&b, job).iter().any(|r| r["error"].as_str().is_some_and(|e| e.contains("is a symbolic link")))
    };
    assert!(wait_for(Duration::from_secs(6), || refused("last") && refused("middle")), "{}", b.log());
    d.stop();
    for job in ["last", "middle"] {
        let runs = history(&b, job);
        let after: Vec<_> = runs.iter().filter(|r| r["outcome"] == "failure").collect();
        assert!(!after.is_empty(), "{runs:?}");
        assert!(runs.iter().all(|r| r["details"]["files_deleted"].as_u64().unwrap_or(0) == 0), "{runs:?}");
    }
    assert!(b.path("precious/keep.db").exists() && b.path("precious/inner/keep.db").exists());
}

/// Today's report stem in UTC (the daemon runs with TZ=UTC).
fn report_stems() -> Vec<String> {
    let now = chrono::Utc::now();
    // Around midnight the run may fall on either side.
    [now - chrono::Duration::minutes(5), now, now + chrono::Duration::minutes(5)]
        .iter()
        .map(|t| format!("report-{}", t.format("%Y-%m-%d")))
        .collect()
}

const REPORT: &str = "[jobs.weekly]\nevery = \"1s\"\naction = \"report\"\noutput_dir = \"reports\"\nperiod = \"1d\"\n";

#[test]
fn a_report_name_planted_as_a_link_leaves_its_target_unchanged() {
    let b = Beatd::with_config(REPORT);
    std::fs::create_dir(b.path("reports")).expect("mkdir");
    std::fs::set_permissions(b.path("reports"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let victim = b.path("victim.conf");
    std::fs::write(&victim, "root's own file\n").expect("write");
    for stem in report_stems() {
        for ext in ["md", "json"] {
            let _ = symlink(&victim, b.path(&format!("reports/{stem}.{ext}")));
        }
    }
    let mut d = b.run(&[]);
    assert!(
        wait_for(Duration::from_secs(6), || history(&b, "weekly").iter().any(|r| r["outcome"] == "success")),
        "{}",
        b.log()
    );
    d.stop();
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "root's own file\n", "written through a planted link");
    let written: Vec<_> = std::fs::read_dir(b.path("reports"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| !std::fs::symlink_metadata(p).expect("stat").file_type().is_symlink())
        .collect();
    assert!(written.iter().any(|p| p.extension().is_some_and(|e| e == "md")), "{written:?}");
}

#[test]
fn a_report_folder_others_can_write_is_refused_unless_sticky_and_ours() {
    let b = Beatd::with_config(REPORT);
    std::fs::create_dir(b.path("reports")).expect("mkdir");
    std::fs::set_permissions(b.path("reports"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let stderr = check_stderr(&b);
    let want = format!(
        "beatd.toml:4:14: job \"weekly\": output_dir: {} can be written by other users (mode 0777): refusing to write there; make it writable by beatd's user only, or sticky and owned by it\n1 error\n",
        b.path("reports").display()
    );
    assert_eq!(stderr, want);
    // /tmp-style: sticky and beatd's own is fine, and links planted there are still not followed.
    std::fs::set_permissions(b.path("reports"), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    b.cmd(&["check", "-c", "beatd.toml"]).assert().success();
}

#[test]
fn queue_and_command_inputs_a_run_could_not_use_are_refused_with_their_position() {
    let b = Beatd::with_config(
        r#"[jobs.nul]
every = "1m"
action = "command"
command = "echo a\u0000b"
workdir = "/tmp\u0000x"
env = { "A=B" = "1", GOOD = "x\u0000y", "" = "z" }

[jobs.to-a-file]
every = "1m"
action = "report"
output_dir = "beatd.toml"

[jobs.to-null]
every = "1m"
action = "report"
output_dir = "/dev/null"

[jobs.clean-nul]
every = "1m"
action = "cleanup"
path = "/tmp/a\u0000"
older_than = "1d"
"#,
    );
    let file = b.path("beatd.toml").display().to_string();
    assert_eq!(
        check_stderr(&b),
        format!(
            "beatd.toml:4:11: job \"nul\": \"command\" contains a NUL byte, which no command line can hold\n\
             beatd.toml:5:11: job \"nul\": \"workdir\" contains a NUL byte, which no path can hold\n\
             beatd.toml:6:9: job \"nul\": env name \"A=B\" must not contain \"=\"\n\
             beatd.toml:6:29: job \"nul\": env \"GOOD\" contains a NUL byte, which no environment can hold\n\
             beatd.toml:6:41: job \"nul\": env name \"\" must not be empty\n\
             beatd.toml:11:14: job \"to-a-file\": output_dir: {file} is not a folder\n\
             beatd.toml:16:14: job \"to-null\": output_dir: /dev/null is not a folder\n\
             beatd.toml:21:8: job \"clean-nul\": \"path\" contains a NUL byte, which no path can hold\n\
             8 errors\n"
        )
    );
}

#[test]
fn an_empty_token_file_is_a_config_error_at_check_start_and_reload() {
    for content in ["", " \n\t\n"] {
        let b = Beatd::with_config("[api]\nlisten = \"127.0.0.1:8089\"\ntoken_file = \"token\"\n");
        std::fs::write(b.path("token"), content).expect("token");
        let want = "beatd.toml:3:14: api: token_file token is empty: an empty token would let anyone in (remove token_file and beatd makes one)\n1 error\n".to_string();
        assert_eq!(check_stderr(&b), want);
        b.cmd(&["run", "-c", "beatd.toml"])
            .assert()
            .code(1)
            .stderr(predicates::str::contains(want.lines().next().expect("a line")));
    }
    // A running daemon whose token file is emptied refuses the reload and keeps its token.
    let port = free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"token\"\n[jobs.cmd]\nevery = \"1h\"\naction = \"command\"\ncommand = \"true\"\n"
    ));
    std::fs::write(b.path("token"), "t0ken\n").expect("token");
    let mut d = b.run(&[]);
    d.wait_started();
    std::fs::write(b.path("token"), "").expect("empty it");
    d.signal(Signal::SIGHUP);
    d.wait_for_log("reload failed", Duration::from_secs(5));
    assert!(b.log().contains("is empty: an empty token would let anyone in"), "{}", b.log());
    assert_eq!(raw(port, "POST", "/api/jobs/cmd/run", &[]).0, 401);
    assert_eq!(
        raw(port, "POST", "/api/jobs/cmd/run", &[("Authorization", "bearer t0ken")]).0,
        202,
        "bearer in any case"
    );
    d.stop();
}

/// One HTTP/1.1 request over a fresh TCP connection, headers as given (Host defaults to
/// 127.0.0.1:PORT); returns the status and the body.
/// A server that cannot be reached within 2 s, or does not answer within 5 s, gives status 0.
fn raw(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)) else {
        return (0, "no connection within 2 s".into());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, "could not send".into());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

fn api_daemon(api_extra: &str) -> (Beatd, Running, u16) {
    let port = free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n{api_extra}\n[jobs.cmd]\nevery = \"1h\"\naction = \"command\"\ncommand = \"echo ran >> ran.txt\"\n"
    ));
    let d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(5), || raw_ok(port)), "{}", b.log());
    (b, d, port)
}

fn raw_ok(port: u16) -> bool {
    raw(port, "GET", "/healthz", &[]).0 == 200
}

#[test]
fn a_web_page_cannot_drive_the_api_even_without_a_token() {
    let (b, mut d, port) = api_daemon("allow_unauthenticated = true");
    assert!(b.log().contains("allow_unauthenticated = true: anyone who can reach"), "{}", b.log());
    let refused = r#"{"error":"cross-origin request refused"}"#;
    // A form or fetch() from another site: text/plain needs no preflight.
    let evil = [("Origin", "https://evil.example"), ("Content-Type", "text/plain")];
    assert_eq!(raw(port, "POST", "/api/jobs/cmd/run", &evil), (403, refused.to_string()));
    assert_eq!(
        raw(port, "POST", "/api/jobs/cmd/pause", &[("Sec-Fetch-Site", "cross-site")]),
        (403, refused.to_string())
    );
    assert_eq!(raw(port, "POST", "/api/jobs/cmd/run", &[("Origin", "null")]).0, 403);
    // DNS rebinding: the page's own name in Host, for reads and writes.
    let rebound = [("Host", "attacker.example:8089")];
    let misdirected =
        r#"{"error":"Host \"attacker.example\" is not a name of this API (add it to [api] allowed_hosts)"}"#;
    assert_eq!(raw(port, "GET", "/api/jobs", &rebound), (421, misdirected.to_string()));
    assert_eq!(raw(port, "POST", "/api/jobs/cmd/run", &rebound).0, 421);
    // No CORS, ever: a preflight gets no allowance.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let preflight = format!(
        "OPTIONS /api/jobs/cmd/run HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    );
    s.write_all(preflight.as_bytes()).expect("send");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(!resp.to_ascii_lowercase().contains("access-control-allow"), "{resp}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!b.path("ran.txt").exists(), "a refused request ran the job");
    // The operator's own page (same origin) and plain clients are served.
    let own = format!("http://127.0.0.1:{port}");
    assert_eq!(raw(port, "POST", "/api/jobs/cmd/run", &[("Origin", own.as_str())]).0, 202);
    assert!(wait_for(Duration::from_secs(5), || b.path("ran.txt").exists()));
    d.stop();
}

#[test]
fn the_dashboard_gives_a_rebinding_or_cross_site_page_nothing() {
    let (b, mut d, port) = api_daemon("allow_unauthenticated = true");
    // A rebinding page reads no dashboard: its own name in Host is refused for every page.
    for path in ["/", "/timeline", "/jobs/cmd", "/assets/app.js"] {
        assert_eq!(raw(port, "GET", path, &[("Host", "attacker.example")]).0, 421, "{path}");
    }
    // The dashboard's buttons call the API, whose cross-origin rule holds for runs too.
    let evil = [("Origin", "https://evil.example"), ("Content-Type", "text/plain")];
    let unknown = "/api/runs/0b7e0d0a-1111-4222-8333-444455556666/cancel";
    assert_eq!(raw(port, "POST", unknown, &evil).0, 403);
    assert_eq!(raw(port, "POST", unknown, &[("Sec-Fetch-Site", "cross-site")]).0, 403);
    // A page cannot frame the dashboard (clickjacking its buttons).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let head = resp.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase();
    assert!(head.contains("x-frame-options: deny") && head.contains("frame-ancestors 'none'"), "{head}");
    assert!(!head.contains("set-cookie"), "the dashboard sets no cookie: {head}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!b.path("ran.txt").exists());
    d.stop();
}

#[test]
fn off_loopback_the_dashboard_needs_the_token_like_the_job_list() {
    let port = free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"0.0.0.0:{port}\"\n\n[jobs.cmd]\nevery = \"1h\"\naction = \"noop\"\n"
    ));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(5), || raw_ok(port)), "{}", b.log());
    assert_eq!(raw(port, "GET", "/", &[]).0, 401);
    assert_eq!(raw(port, "GET", "/jobs/cmd", &[]).0, 401);
    let token = std::fs::read_to_string(b.path("state/api-token")).expect("token");
    let bearer = format!("Bearer {}", token.trim());
    assert_eq!(raw(port, "GET", "/", &[("Authorization", bearer.as_str())]).0, 200);
    d.stop();
}

/// The name of a local account without rights, made if needed (the test runs as root).
fn stranger() -> &'static str {
    const NAME: &str = "beatd-stranger";
    assert!(nix::unistd::Uid::effective().is_root(), "this test needs root (CI runs as root): it makes an account");
    let exists = Command::new("id").arg(NAME).output().is_ok_and(|o| o.status.success());
    if !exists {
        let made = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NAME])
            .status()
            .is_ok_and(|s| s.success());
        assert!(made || Command::new("id").arg(NAME).output().is_ok_and(|o| o.status.success()), "useradd {NAME}");
    }
    NAME
}

/// Runs `program args` as the stranger, from `/`.
fn as_stranger(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", stranger(), "--", program])
        .args(args)
        .current_dir("/")
        .output()
        .expect("runuser")
}

#[test]
fn a_local_stranger_cannot_run_roots_jobs_but_the_operator_can() {
    let (b, mut d, port) = api_daemon("");
    // Over loopback: the stranger can connect, and is refused.
    let post = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'POST /api/jobs/cmd/run HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3"
    );
    let out = as_stranger("/bin/bash", &["-c", &post]);
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}{}", String::from_utf8_lossy(&out.stderr));
    let token = as_stranger("/bin/cat", &[&b.path("state/api-token").display().to_string()]);
    assert!(!token.status.success(), "the stranger read the token");
    // The operator (root, who can read the token beatd made) can.
    let out = b.cmd(&["trigger", "cmd", "-c", "beatd.toml"]).output().expect("trigger");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for(Duration::from_secs(5), || b.path("ran.txt").exists()));
    d.stop();

    // Over a unix socket in a folder anyone may enter: the socket's own permissions refuse.
    let open = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = open.path().join("api.sock");
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"unix:{}\"\n[jobs.cmd]\nevery = \"1h\"\naction = \"command\"\ncommand = \"echo ran >> ran.txt\"\n",
        socket.display()
    ));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(5), || socket.exists()), "{}", b.log());
    let mode = std::fs::metadata(&socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let connect =
        format!("import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?})", socket.display().to_string());
    let out = as_stranger("python3", &["-c", &connect]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    let out = b.cmd(&["trigger", "cmd", "-c", "beatd.toml"]).output().expect("trigger");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = b.cmd(&["status", "-c", "beatd.toml"]).output().expect("status");
    assert!(String::from_utf8_lossy(&status.stdout).contains("cmd"), "{status:?}");
    assert!(wait_for(Duration::from_secs(5), || b.path("ran.txt").exists()));
    d.stop();
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

#[test]
fn state_files_are_beatds_alone() {
    let (b, mut d, _) = api_daemon("");
    d.stop();
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&b.path("state")), 0o700);
    let files: Vec<_> = std::fs::read_dir(b.path("state")).expect("list").map(|e| e.expect("entry").path()).collect();
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // A folder from an older beatd, readable by all, is narrowed at start.
    std::fs::set_permissions(b.path("state"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut d = b.run(&[]);
    d.wait_started();
    d.stop();
    assert_eq!(mode(&b.path("state")), 0o700);
}

#[test]
fn two_thousand_idle_connections_under_a_low_descriptor_limit_starve_nothing() {
    // This test holds 2 000 sockets itself.
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    setrlimit(Resource::Nofile, Rlimit { current: Some(hard.min(8192)), maximum: limit.maximum }).expect("setrlimit");
    let port = free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n[jobs.cmd]\nevery = \"1s\"\naction = \"command\"\ncommand = \"echo ran >> ran.txt\"\n"
    ));
    let mut d = b.run_with_nofile(1024);
    assert!(wait_for(Duration::from_secs(5), || raw_ok(port)), "{}", b.log());
    let mut idle = Vec::new();
    for i in 0..2000 {
        // A server that stops accepting makes the kernel's backlog fill: stop there.
        let Ok(mut s) =
            std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
        else {
            break;
        };
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        }
        idle.push(s);
    }
    let opened = idle.len();
    let ran = || crate::util::lines(&b.path("ran.txt")).len();
    let before = ran();
    // Under the flood, with every connection still held by this test:
    let answered = wait_for(Duration::from_secs(3), || raw(port, "GET", "/healthz", &[]).0 == 200);
    assert!(answered, "/healthz did not answer ({opened} connections opened)\n{}", b.log());
    std::thread::sleep(Duration::from_secs(3));
    assert!(ran() >= before + 2, "command jobs stopped running: {before} then {}\n{}", ran(), b.log());
    assert_eq!(raw(port, "GET", "/healthz", &[]), (200, r#"{"status":"ok"}"#.to_string()));
    drop(idle);
    d.stop();
    let log = b.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(history(&b, "cmd").iter().all(|r| r["outcome"] == "success"), "{:?}", history(&b, "cmd"));
}
