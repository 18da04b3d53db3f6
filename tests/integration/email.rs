//! E-mail notifications against a real SMTP server: Python's aiosmtpd from the tests'
//! virtualenv, with STARTTLS required (a certificate from the test's own CA) and AUTH, or TLS
//! from the first byte. The server writes each message it accepts, parsed by Python's `email`
//! package, as a JSON file; the tests read what arrived.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::tls::Pki;
use crate::util::{Beatd, Reaped, free_port, history, venv_python, wait_for};

/// An SMTP server: `python -c SERVER PORT MODE CERT KEY USER PASSWORD OUTDIR`, MODE `starttls`
/// (STARTTLS and AUTH required), `smtps` (implicit TLS, AUTH required) or `plain` (neither).
const SERVER: &str = r#"
import asyncio, email, email.policy, json, os, ssl, sys, time, warnings
warnings.simplefilter("ignore")  # aiosmtpd's deprecation notes about its own internals
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, mode, cert, key, user, password, out = sys.argv[1:8]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

class Save:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        attachments = [
            {"filename": part.get_filename(), "type": part.get_content_type(), "text": part.get_content().replace("\r\n", "\n")}
            for part in msg.iter_attachments()
        ]
        record = {
            "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
            "subject": msg["subject"], "from": msg["from"], "to": msg["to"],
            "date": msg["date"], "message_id": msg["message-id"],
            "body": body.get_content().replace("\r\n", "\n") if body else None, "attachments": attachments,
            # On the smtps socket every byte is TLS (aiosmtpd sets session.ssl only after STARTTLS).
            "tls": mode == "smtps" or session.ssl is not None, "login": getattr(session.auth_data, "login", b"").decode() or None,
        }
        name = os.path.join(out, "%d-%d.json" % (time.time_ns(), os.getpid()))
        with open(name + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(name + ".tmp", name)
        return "250 OK"

common = dict(hostname="127.0.0.1", port=int(port), authenticator=authenticate, auth_required=True)
if mode == "plain":
    # A server that offers no STARTTLS and takes anything: what a client must not fall back to.
    controller = Controller(Save(), hostname="127.0.0.1", port=int(port))
elif mode == "starttls":
    controller = Controller(Save(), tls_context=context, require_starttls=True, auth_require_tls=True, **common)
else:
    # aiosmtpd only offers AUTH after its own STARTTLS: on a TLS socket it must be told.
    controller = Controller(Save(), ssl_context=context, server_hostname="127.0.0.1", auth_require_tls=False, **common)
controller.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
"#;

/// The SMTP server's password: it must never reach beatd's log.
const PASSWORD: &str = "s3cret-Pa55word";

struct Smtp {
    port: u16,
    _child: Reaped,
}

impl Smtp {
    fn start(pki: &Pki, mode: &str, out: &Path) -> Smtp {
        let port = free_port();
        std::fs::create_dir_all(out).expect("mail folder");
        let mut child = Command::new(venv_python())
            .arg("-c")
            .arg(SERVER)
            .arg(port.to_string())
            .arg(mode)
            .arg(pki.path("server.pem"))
            .arg(pki.path("server.key"))
            .arg("beatd")
            .arg(PASSWORD)
            .arg(out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python starts");
        let mut ready = String::new();
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("stdout");
        let _ = std::io::BufReader::new(stdout).read_line(&mut ready);
        assert_eq!(ready.trim(), "ready", "the SMTP server did not start");
        Smtp { port, _child: Reaped(child) }
    }
}

/// The messages that arrived in `out`, oldest first.
fn mails(out: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(out)
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
        })
        .unwrap_or_default();
    names.sort();
    names.iter().filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()).collect()
}

fn notifier(pki: &Pki, url: &str, password_file: &str) -> String {
    format!(
        "[notifiers.ops-mail]\nkind = \"email\"\nsmtp = \"{url}\"\nfrom = \"beatd <beatd@example.com>\"\n\
         to = [\"ops@example.com\", \"oncall@example.com\"]\nusername = \"beatd\"\npassword_file = \"{password_file}\"\n\
         ca_file = \"{}\"\n",
        pki.path("ca.pem").display()
    )
}

#[test]
fn failures_recoveries_and_reports_arrive_as_readable_mail_over_starttls_with_auth() {
    let pki = Pki::new();
    let b = Beatd::with_config("");
    let out = b.path("mail");
    let smtp = Smtp::start(&pki, "starttls", &out);
    std::fs::write(b.path("smtp-password"), format!("{PASSWORD}\n")).expect("password");
    b.write(
        "beatd.toml",
        &format!(
            "{}\n\
             [jobs.cleanup-every-day]\nevery = \"1s\"\naction = \"command\"\ntimezone = \"Europe/Berlin\"\n\
             command = \"echo removing old files; sleep 0.2; echo 'rm: cannot remove x: Permission denied' >&2; test -e flag\"\n\
             notify = \"ops-mail\"\n\
             [jobs.weekly]\nevery = \"3s\"\naction = \"report\"\noutput_dir = \"reports\"\nnotify = \"ops-mail\"\n",
            notifier(&pki, &format!("smtp://127.0.0.1:{}", smtp.port), "smtp-password")
        ),
    );
    let d = b.run(&[]);
    // The job fails: one mail. It keeps failing: no more. It succeeds again: a recovery mail.
    assert!(wait_for(Duration::from_secs(15), || !mails(&out).is_empty()), "{}", b.log());
    assert!(wait_for(Duration::from_secs(5), || history(&b, "cleanup-every-day").len() >= 3), "{}", b.log());
    std::fs::write(b.path("flag"), "").expect("flag");
    assert!(
        wait_for(Duration::from_secs(10), || mails(&out)
            .iter()
            .any(|m| m["subject"] == "[beatd] cleanup-every-day recovered")),
        "{}",
        b.log()
    );
    let report = || {
        mails(&out).into_iter().find(|m| m["subject"].as_str().is_some_and(|s| s.starts_with("[beatd] beatd report ")))
    };
    assert!(wait_for(Duration::from_secs(10), || report().is_some()), "{:#?}\n{}", mails(&out), b.log());
    drop(d);

    let all = mails(&out);
    let failed: Vec<&Value> = all.iter().filter(|m| m["subject"] == "[beatd] cleanup-every-day failed").collect();
    assert_eq!(failed.len(), 1, "a job that keeps failing is announced once: {all:#?}");
    let m = failed[0];
    assert_eq!(m["tls"], true, "STARTTLS was used");
    assert_eq!(m["login"], "beatd");
    assert_eq!(m["mail_from"], "beatd@example.com");
    assert_eq!(m["rcpt_tos"], serde_json::json!(["ops@example.com", "oncall@example.com"]));
    assert_eq!(m["from"], "beatd <beatd@example.com>");
    assert_eq!(m["to"], "ops@example.com, oncall@example.com");
    assert!(m["date"].is_string() && m["message_id"].is_string(), "{m:#}");
    let body = m["body"].as_str().unwrap_or("");
    assert!(body.starts_with("cleanup-every-day failed: exited with status 1\n"), "{body}");
    assert!(body.contains("Job:      cleanup-every-day\n") && body.contains("Event:    failure\n"), "{body}");
    // The slot in the job's zone, and in UTC.
    assert!(body.contains(" CET (20") || body.contains(" CEST (20"), "{body}");
    assert!(body.contains("Error:    exited with status 1\n"), "{body}");
    assert!(
        body.contains("Last output lines:\n    removing old files\n    rm: cannot remove x: Permission denied\n"),
        "{body}"
    );

    let report = report().expect("the report mail");
    let attachment = &report["attachments"][0];
    assert!(
        attachment["filename"].as_str().is_some_and(|n| n.starts_with("report-") && n.ends_with(".md")),
        "{report:#}"
    );
    assert_eq!(attachment["type"], "text/markdown");
    let written = std::fs::read_to_string(b.path("reports").join(attachment["filename"].as_str().unwrap_or("")))
        .expect("report file");
    assert_eq!(attachment["text"].as_str(), Some(written.as_str()), "the attachment is the report's Markdown");
    assert!(!b.log().contains(PASSWORD), "the password is in the log");
}

#[test]
fn a_refused_login_is_a_logged_failure_that_leaves_the_job_alone_and_smtps_works() {
    let pki = Pki::new();
    let b = Beatd::with_config("");
    let out = b.path("mail");
    let tls = Smtp::start(&pki, "smtps", &b.path("mail-tls"));
    let starttls = Smtp::start(&pki, "starttls", &out);
    std::fs::write(b.path("wrong-password"), "not-the-password\n").expect("password");
    std::fs::write(b.path("smtp-password"), PASSWORD).expect("password");
    let wrong = notifier(&pki, &format!("smtp://127.0.0.1:{}", starttls.port), "wrong-password");
    let right =
        notifier(&pki, &format!("smtps://127.0.0.1:{}", tls.port), "smtp-password").replace("ops-mail", "tls-mail");
    b.write(
        "beatd.toml",
        &format!(
            "{wrong}\n{right}\n\
             [jobs.failing]\nevery = \"1s\"\naction = \"command\"\ncommand = \"exit 2\"\nnotify = \"ops-mail\"\n\
             [jobs.failing-too]\nevery = \"1s\"\naction = \"command\"\ncommand = \"exit 3\"\nnotify = \"tls-mail\"\n"
        ),
    );
    let _d = b.run(&[]);
    assert!(
        wait_for(Duration::from_secs(15), || b.log().contains("notification attempt 1/6 failed (SMTP 127.0.0.1:")),
        "{}",
        b.log()
    );
    assert!(wait_for(Duration::from_secs(10), || mails(&b.path("mail-tls")).len() == 1), "{}", b.log());
    let log = b.log();
    let attempt = log.lines().find(|l| l.contains("notification attempt 1/6 failed")).unwrap_or("");
    assert!(
        attempt.contains("535") || attempt.to_lowercase().contains("authentication"),
        "the server's refusal is said: {attempt}"
    );
    assert!(!log.contains(PASSWORD) && !log.contains("not-the-password"), "a password is in the log:\n{log}");
    assert!(mails(&out).is_empty(), "nothing was delivered with the wrong password");
    // The job is not held up by its notifier: it keeps running every second.
    let runs = history(&b, "failing").len();
    assert!(wait_for(Duration::from_secs(5), || history(&b, "failing").len() >= runs + 2), "{}", b.log());
    let tls_mail = &mails(&b.path("mail-tls"))[0];
    assert_eq!(
        (tls_mail["subject"].as_str(), tls_mail["tls"].as_bool()),
        (Some("[beatd] failing-too failed"), Some(true))
    );
}

#[test]
fn a_server_without_starttls_gets_neither_the_password_nor_the_mail() {
    let pki = Pki::new();
    let b = Beatd::with_config("");
    let out = b.path("mail");
    let plain = Smtp::start(&pki, "plain", &out);
    std::fs::write(b.path("smtp-password"), PASSWORD).expect("password");
    b.write(
        "beatd.toml",
        &format!(
            "{}\n[jobs.failing]\nevery = \"1s\"\naction = \"command\"\ncommand = \"exit 2\"\nnotify = \"ops-mail\"\n",
            notifier(&pki, &format!("smtp://127.0.0.1:{}", plain.port), "smtp-password")
        ),
    );
    let _d = b.run(&[]);
    assert!(
        wait_for(Duration::from_secs(15), || b.log().contains("notification attempt 2/6 failed (SMTP 127.0.0.1:")),
        "{}",
        b.log()
    );
    let log = b.log();
    let attempt = log.lines().find(|l| l.contains("notification attempt 1/6 failed")).unwrap_or("");
    assert!(attempt.to_lowercase().contains("tls"), "the refusal names TLS: {attempt}");
    assert!(mails(&out).is_empty(), "a mail went out in plain text");
    assert!(!log.contains(PASSWORD), "the password is in the log:\n{log}");
}

#[test]
fn mail_settings_are_checked_with_their_position() {
    let b = Beatd::with_config(
        "[notifiers.a]\nkind = \"email\"\nsmtp = \"smtp://u:hunter2@mail.example.com\"\nfrom = \"not an address\"\nto = []\n\
         [notifiers.b]\nkind = \"email\"\nsmtp = \"smtp://mail.example.com\"\nstarttls = false\nfrom = \"b@example.com\"\n\
         to = [\"x@example.com\"]\nusername = \"u\"\npassword_file = \"missing\"\n\
         [notifiers.c]\nkind = \"mail\"\n",
    );
    let out = b.cmd(&["check", "beatd.toml"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    for want in [
        "beatd.toml:3:8: notifier \"a\": put the user in \"username\" and the password in \"password_file\", not in the URL",
        "beatd.toml:4:8: notifier \"a\": \"not an address\" is not a mail address",
        "beatd.toml:5:6: notifier \"a\": \"to\" needs at least one address",
        "beatd.toml:12:12: notifier \"b\": credentials are only sent over TLS",
        "beatd.toml:13:17: notifier \"b\": cannot read password_file",
        "beatd.toml:15:8: notifier \"c\": unknown notifier kind \"mail\"",
    ] {
        assert!(err.contains(want), "{want}\nnot in:\n{err}");
    }
    assert!(!err.contains("hunter2"), "the URL's password is echoed:\n{err}");
}
