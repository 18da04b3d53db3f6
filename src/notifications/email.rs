//! E-mail notifications over SMTP, with lettre.
//!
//! `smtp://` is the submission port with STARTTLS, which is required (a server that does not
//! offer it is an error, never a fallback to plain text) unless `starttls = false`, meant for a
//! relay on the same host; `smtps://` is TLS from the first byte. Certificates are checked
//! against the public roots, or against `ca_file` alone when it is set. Credentials are only
//! ever sent over TLS: `beatd check` refuses `username` with `starttls = false`.
//!
//! The password is read from `password_file` at each delivery, so rotating it needs no reload,
//! and it is never logged: errors carry the server's answer, which does not echo it.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Notification;

/// How the connection to the server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtps://`: TLS from the first byte (port 465 by default).
    Implicit,
    /// `smtp://`: STARTTLS, required (port 587 by default).
    StartTls,
    /// `smtp://` with `starttls = false`: plain text, for a relay on the same host.
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub security: Security,
    pub host: String,
    pub port: u16,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// CA certificates the server's must chain to, instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// Reports attach their Markdown.
    pub attach_report: bool,
}

/// `smtp://host[:port]` or `smtps://host[:port]`: the security, host and port. Anything else in
/// the URL (a user, a password, a path) is refused: credentials have keys of their own.
pub fn parse_url(text: &str, starttls: bool) -> Result<(Security, String, u16), String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("invalid SMTP URL: {e}"))?;
    let (security, default_port) = match (url.scheme(), starttls) {
        ("smtps", _) => (Security::Implicit, 465),
        ("smtp", true) => (Security::StartTls, 587),
        ("smtp", false) => (Security::Plain, 587),
        (other, _) => return Err(format!("the SMTP URL must start with smtp:// or smtps://, not {other}://")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("put the user in \"username\" and the password in \"password_file\", not in the URL".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err("an SMTP URL is smtp://host[:port] or smtps://host[:port]: nothing after the port".into());
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or("the SMTP URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((security, host, url.port().unwrap_or(default_port)))
}

/// `[beatd] cleanup-every-day failed`.
pub fn subject(n: &Notification) -> String {
    let what = match (n.event, n.check) {
        ("failure", true) => "is down",
        ("failure", false) => "failed",
        ("recovery", true) => "is up again",
        ("recovery", false) => "recovered",
        _ => return format!("[beatd] {}", n.text),
    };
    format!("[beatd] {} {what}", n.job)
}

/// The plain-text body: what happened, the job, its slot (in the job's zone and in UTC), the
/// fire id, the error, and the run's last output lines.
pub fn body(n: &Notification) -> String {
    let mut body = format!("{}\n\n", n.text);
    let local = n.timezone.map(|tz| n.scheduled_at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string());
    let utc = n.scheduled_at.format("%Y-%m-%dT%H:%M:%SZ");
    let mut field = |name: &str, value: &str| body.push_str(&format!("{name:<9} {value}\n"));
    field("Job:", &n.job);
    field("Event:", n.event);
    match local {
        Some(local) => field("Slot:", &format!("{local} ({utc})")),
        None => field("Slot:", &utc.to_string()),
    }
    field("Fire id:", &n.fire_id);
    if let Some(e) = &n.error {
        field("Error:", e);
    }
    if !n.output.is_empty() {
        body.push_str("\nLast output lines:\n");
        for line in &n.output {
            body.push_str("    ");
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some(report) = &n.attachment {
        body.push('\n');
        body.push_str(&report.text);
    }
    body
}

/// The message, with the report's Markdown attached when there is one and `attach_report`.
pub fn message(email: &Email, n: &Notification) -> Result<Message, String> {
    // A Message-ID of this host's name; lettre adds the Date.
    let mut builder = Message::builder().from(email.from.clone()).subject(subject(n)).message_id(None);
    for to in &email.to {
        builder = builder.to(to.clone());
    }
    let text = SinglePart::builder().header(ContentType::TEXT_PLAIN).body(body(n));
    let built = match (&n.attachment, email.attach_report) {
        (Some(report), true) => {
            let markdown = ContentType::parse("text/markdown; charset=utf-8").map_err(|e| e.to_string())?;
            let file = Attachment::new(report.name.clone()).body(report.text.clone(), markdown);
            builder.multipart(MultiPart::mixed().singlepart(text).singlepart(file))
        }
        _ => builder.singlepart(text),
    };
    built.map_err(|e| format!("cannot build the message: {e}"))
}

/// One delivery attempt.
pub async fn send(email: &Email, n: &Notification) -> Result<(), String> {
    let message = message(email, n)?;
    let tls = || -> Result<TlsParameters, String> {
        let mut params = TlsParameters::builder(email.host.clone());
        if let Some(ca) = &email.ca_file {
            let pem = crate::tls::TlsFiles { ca_file: Some(ca.clone()), client: None }.read()?;
            let cert = Certificate::from_pem(&pem.ca.unwrap_or_default()).map_err(|e| format!("ca_file: {e}"))?;
            params = params.certificate_store(CertificateStore::None).add_root_certificate(cert);
        }
        params.build_rustls().map_err(|e| format!("TLS: {e}"))
    };
    let tls = match email.security {
        Security::Implicit => Tls::Wrapper(tls()?),
        Security::StartTls => Tls::Required(tls()?),
        Security::Plain => Tls::None,
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(email.host.as_str())
        .port(email.port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(30)));
    if let Some(user) = &email.username {
        let password = match &email.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            None => String::new(),
        };
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP {}:{}: {}", email.host, email.port, crate::http::source_chain(&e, |_| false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(event: &'static str, check: bool) -> Notification {
        Notification {
            event,
            job: "cleanup-every-day".into(),
            fire_id: "f1".into(),
            scheduled_at: chrono::DateTime::from_timestamp(1_795_482_000, 0).expect("valid"),
            text: "cleanup-every-day failed: exited with status 3".into(),
            error: Some("exited with status 3".into()),
            report: None,
            output: vec!["rm: cannot remove 'x': Permission denied".into()],
            check,
            timezone: Some(chrono_tz::Europe::Berlin),
            attachment: None,
        }
    }

    #[test]
    fn urls_say_how_to_connect_and_keep_credentials_out() {
        assert_eq!(
            parse_url("smtp://mail.example.com", true),
            Ok((Security::StartTls, "mail.example.com".into(), 587))
        );
        assert_eq!(
            parse_url("smtps://mail.example.com", true),
            Ok((Security::Implicit, "mail.example.com".into(), 465))
        );
        assert_eq!(parse_url("smtp://127.0.0.1:25", false), Ok((Security::Plain, "127.0.0.1".into(), 25)));
        assert_eq!(parse_url("smtp://[::1]:2525", true), Ok((Security::StartTls, "::1".into(), 2525)));
        assert!(
            parse_url("smtp://u:secret@h", true).is_err_and(|e| e.contains("password_file") && !e.contains("secret"))
        );
        assert!(parse_url("http://h", true).is_err_and(|e| e.contains("smtp://")));
        assert!(parse_url("smtp://h/x", true).is_err());
    }

    #[test]
    fn subjects_and_bodies_say_what_happened_where_and_when() {
        assert_eq!(subject(&notification("failure", false)), "[beatd] cleanup-every-day failed");
        assert_eq!(subject(&notification("recovery", false)), "[beatd] cleanup-every-day recovered");
        assert_eq!(subject(&notification("failure", true)), "[beatd] cleanup-every-day is down");
        let body = body(&notification("failure", false));
        assert!(body.starts_with("cleanup-every-day failed: exited with status 3\n\n"), "{body}");
        assert!(body.contains("Slot:     2026-11-24 02:00:00 CET (2026-11-24T01:00:00Z)\n"), "{body}");
        assert!(body.contains("Error:    exited with status 3\n"), "{body}");
        assert!(body.contains("Last output lines:\n    rm: cannot remove 'x': Permission denied\n"), "{body}");
    }
}
