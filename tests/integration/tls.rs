//! TLS to brokers and HTTP peers with a private CA made by the test: `rediss://` against a
//! `redis-server` with a TLS port that requires client certificates, `amqps://` against a
//! RabbitMQ node of the test's own with a TLS listener, and HTTPS checks and webhooks against a
//! Python HTTPS server that requires a client certificate. A wrong CA must fail with an error
//! that says so, and queue messages must wait in the outbox until the CA is right.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::util::{Beatd, RabbitNode, Reaped, free_port, history, wait_for};

/// A test CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a
/// second CA that signed neither: PEM files in a folder.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write PEM");
        let ca = |cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).expect("CA certificate");
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("beatd test CA");
        let (other_pem, _) = ca("some other CA");
        write("ca.pem", ca_pem);
        write("other-ca.pem", other_pem);
        for (name, sans, usage) in [
            ("server", vec!["127.0.0.1".to_string(), "localhost".to_string()], ExtendedKeyUsagePurpose::ServerAuth),
            ("client", vec!["beatd".to_string()], ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("certificate");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The three config keys, with `ca` as the CA file.
    fn keys(&self, ca: &str) -> String {
        format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            self.path(ca).display(),
            self.path("client.pem").display(),
            self.path("client.key").display()
        )
    }
}

/// A `redis-server` with a TLS port that requires a client certificate signed by the test CA,
/// and a plain port the test reads through.
struct TlsRedis {
    port: u16,
    tls_port: u16,
    _child: Reaped,
}

impl TlsRedis {
    fn start(pki: &Pki) -> TlsRedis {
        let (port, tls_port) = (free_port(), free_port());
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--tls-port", &tls_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--tls-auth-clients", "yes"])
            .arg("--tls-cert-file")
            .arg(pki.path("server.pem"))
            .arg("--tls-key-file")
            .arg(pki.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.path("ca.pem"))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let server = TlsRedis { port, tls_port, _child: Reaped(child) };
        assert!(
            wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()),
            "redis-server with TLS did not start"
        );
        server
    }

    fn list(&self, key: &str) -> Vec<String> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port)).expect("url");
        let mut conn = client.get_connection().expect("plain port answers");
        redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(&mut conn).expect("lrange")
    }
}

const TICK: &str =
    "[jobs.tick]\nevery = \"1s\"\naction = \"push\"\nbroker = \"main\"\nqueue = \"ticks\"\ncatch_up = \"all\"\n";

/// Slots of the push messages, in queue order: each once, in order, none missing.
fn slots_in_order_once(messages: &[Value], log: &str) {
    let slots: Vec<i64> = messages
        .iter()
        .map(|m| {
            chrono::DateTime::parse_from_rfc3339(m["scheduled_at"].as_str().expect("slot"))
                .expect("rfc3339")
                .timestamp()
        })
        .collect();
    assert!(slots.len() >= 3, "{slots:?}\n{log}");
    let expected: Vec<i64> = (slots[0]..slots[0] + slots.len() as i64).collect();
    assert_eq!(slots, expected, "slots out of order, doubled or missing\n{log}");
}

fn json(items: &[String]) -> Vec<Value> {
    items.iter().map(|m| serde_json::from_str(m).expect("json")).collect()
}

#[test]
fn rediss_with_a_private_ca_and_a_client_certificate_delivers() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki);
    let url = format!("rediss://127.0.0.1:{}/0", redis.tls_port);
    let b = Beatd::with_config(&format!("[brokers.main]\nurl = \"{url}\"\n{}{TICK}", pki.keys("ca.pem")));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(10), || redis.list("ticks").len() >= 3), "{}", b.log());
    d.stop();
    slots_in_order_once(&json(&redis.list("ticks")), &b.log());
}

#[test]
fn rediss_with_the_wrong_ca_says_so_and_keeps_messages_until_the_ca_is_right() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki);
    let url = format!("rediss://127.0.0.1:{}/0", redis.tls_port);
    // The CA file the config names holds the wrong CA for now.
    std::fs::copy(pki.path("other-ca.pem"), pki.path("trusted.pem")).expect("copy");
    let api = free_port();
    let b = Beatd::with_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{api}\"\n[brokers.main]\nurl = \"{url}\"\n{}{TICK}",
        pki.keys("trusted.pem")
    ));
    let mut d = b.run(&[]);
    assert!(wait_for(Duration::from_secs(10), || b.log().contains("broker \"main\" is unreachable")), "{}", b.log());
    std::thread::sleep(Duration::from_secs(2));
    let log = b.log();
    assert!(log.contains("invalid peer certificate") && log.contains("UnknownIssuer"), "{log}");
    assert!(redis.list("ticks").is_empty());
    let metrics = d.api().get("/metrics").1;
    let waiting = metrics.as_str().unwrap_or_default().lines().find_map(|l| l.strip_prefix("beatd_outbox_messages "));
    assert!(waiting.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 2), "{metrics}");
    // Files are read at each new connection: the right CA is used at the next retry.
    std::fs::copy(pki.path("ca.pem"), pki.path("trusted.pem")).expect("copy");
    assert!(wait_for(Duration::from_secs(20), || redis.list("ticks").len() >= 6), "{}", b.log());
    d.stop();
    let log = b.log();
    assert!(log.contains("broker \"main\" is back"), "{log}");
    slots_in_order_once(&json(&redis.list("ticks")), &log);
}

#[test]
fn amqps_with_a_private_ca_delivers_and_the_wrong_ca_waits_in_the_outbox() {
    if !RabbitNode::possible() {
        eprintln!("skipped: a RabbitMQ node of the test's own needs root");
        return;
    }
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    let pki = Pki::new();
    let node = RabbitNode::start(Some((&pki.path("ca.pem"), &pki.path("server.pem"), &pki.path("server.key"))));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (_conn, ch) = rt.block_on(async {
        let conn = lapin::Connection::connect(&node.url(), Default::default()).await.expect("the node's plain port");
        let ch = conn.create_channel().await.expect("channel");
        for q in ["ticks", "waits"] {
            ch.queue_declare(q.into(), QueueDeclareOptions { durable: true, ..Default::default() }, Default::default())
                .await
                .expect("declare");
        }
        (conn, ch)
    });
    let take = |queue: &str| -> Vec<Value> {
        rt.block_on(async {
            let mut got = Vec::new();
            while let Ok(Some(m)) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await {
                got.push(serde_json::from_slice(&m.delivery.data).expect("json"));
            }
            got
        })
    };
    let url = format!("amqps://guest:guest@127.0.0.1:{}/%2f", node.tls_port.expect("a TLS listener"));
    let good = Beatd::with_config(&format!("[brokers.main]\nurl = \"{url}\"\n{}{TICK}", pki.keys("ca.pem")));
    std::fs::copy(pki.path("other-ca.pem"), pki.path("trusted.pem")).expect("copy");
    let wrong = Beatd::with_config(&format!(
        "[brokers.main]\nurl = \"{url}\"\n{}{}",
        pki.keys("trusted.pem"),
        TICK.replace("\"ticks\"", "\"waits\"")
    ));
    let (mut g, mut w) = (good.run(&[]), wrong.run(&[]));
    let mut got = Vec::new();
    assert!(
        wait_for(Duration::from_secs(15), || {
            got.extend(take("ticks"));
            got.len() >= 3
        }),
        "{}",
        good.log()
    );
    g.stop();
    got.extend(take("ticks"));
    slots_in_order_once(&got, &good.log());

    assert!(wait_for(Duration::from_secs(10), || wrong.log().contains("is unreachable")), "{}", wrong.log());
    let log = wrong.log();
    assert!(log.contains("invalid peer certificate") && log.contains("UnknownIssuer"), "{log}");
    assert!(take("waits").is_empty());
    std::fs::copy(pki.path("ca.pem"), pki.path("trusted.pem")).expect("copy");
    let mut waited = Vec::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            waited.extend(take("waits"));
            waited.len() >= 4
        }),
        "{}",
        wrong.log()
    );
    w.stop();
    waited.extend(take("waits"));
    slots_in_order_once(&waited, &wrong.log());
}

/// An HTTPS server (Python's) that requires a client certificate signed by the test CA,
/// answers GET with 200 and records POST bodies, one per line, in `posts`.
fn https_server(pki: &Pki, posts: &Path) -> (u16, Reaped) {
    let port = free_port();
    let script = r#"
import http.server, ssl, sys
port, cert, key, ca, posts = sys.argv[1:]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "9"); self.end_headers()
        self.wfile.write(b"secure ok")
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(posts, "ab") as f: f.write(body + b"\n")
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .args([pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"), posts.to_path_buf()])
        .spawn()
        .expect("python3");
    let child = Reaped(child);
    assert!(wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
    (port, child)
}

#[test]
fn https_checks_and_webhooks_with_a_private_ca_and_a_client_certificate() {
    let pki = Pki::new();
    let posts = pki.path("posts.jsonl");
    let (port, _server) = https_server(&pki, &posts);
    let url = format!("https://127.0.0.1:{port}/");
    let keys = pki.keys("ca.pem");
    let ca_only = format!("ca_file = \"{}\"\n", pki.path("ca.pem").display());
    let b = Beatd::with_config(&format!(
        r#"
[notifiers.ops]
kind = "webhook"
url = "{url}hook"
{keys}
[jobs.trusted]
every = "1s"
action = "http_check"
url = "{url}"
expect_body = "secure ok"
{keys}
[jobs.untrusted]
every = "1s"
action = "http_check"
url = "{url}"
[jobs.no-client-certificate]
every = "1s"
action = "http_check"
url = "{url}"
{ca_only}
[jobs.fails]
every = "1s"
action = "command"
command = "false"
notify = "ops"
"#
    ));
    assert!(b.cmd(&["check", "-c", "beatd.toml"]).output().expect("check").status.success());
    let mut d = b.run(&[]);
    let ok = wait_for(Duration::from_secs(10), || {
        ["trusted", "untrusted", "no-client-certificate"].iter().all(|j| history(&b, j).len() >= 2)
            && std::fs::read_to_string(&posts).is_ok_and(|p| !p.is_empty())
    });
    d.stop();
    assert!(ok, "{}", b.log());
    for run in history(&b, "trusted") {
        assert_eq!(run["outcome"], "success", "{run}");
    }
    for run in history(&b, "untrusted") {
        let error = run["error"].as_str().unwrap_or("");
        assert!(run["outcome"] == "failure" && error.contains("UnknownIssuer"), "{run}");
    }
    for run in history(&b, "no-client-certificate") {
        assert_eq!(run["outcome"], "failure", "the server requires a client certificate: {run}");
    }
    let first: Value =
        serde_json::from_str(std::fs::read_to_string(&posts).expect("posts").lines().next().expect("a post"))
            .expect("json");
    assert_eq!(first["job"], "fails");
    assert_eq!(first["event"], "failure");
}

#[test]
fn tls_keys_are_checked_with_the_config() {
    let pki = Pki::new();
    std::fs::write(pki.path("junk.pem"), "not a certificate\n").expect("write");
    let cases = [
        (
            format!("[brokers.main]\nurl = \"redis://127.0.0.1:6379/0\"\n{}", pki.keys("ca.pem")),
            "beatd.toml:3:1: broker \"main\": \"ca_file\", \"client_cert\" and \"client_key\" need a TLS URL (rediss:// or amqps://): this one is not encrypted",
        ),
        (
            format!(
                "[brokers.main]\nurl = \"rediss://127.0.0.1:6379/0\"\nca_file = \"{}\"\n",
                pki.path("junk.pem").display()
            ),
            "no PEM certificate",
        ),
        (
            format!(
                "[brokers.main]\nurl = \"amqps://127.0.0.1/\"\nclient_cert = \"{}\"\n",
                pki.path("client.pem").display()
            ),
            "beatd.toml:3:15: broker \"main\": \"client_cert\" needs \"client_key\", the file with its private key",
        ),
        (
            format!(
                "[jobs.web]\nevery = \"1m\"\naction = \"http_check\"\nurl = \"http://127.0.0.1/\"\nca_file = \"{}\"\n",
                pki.path("ca.pem").display()
            ),
            "need a TLS URL (https://)",
        ),
        (
            format!(
                "[notifiers.ops]\nkind = \"webhook\"\nurl = \"https://127.0.0.1/\"\n{}",
                pki.keys("ca.pem").replace("client.key", "client.pem")
            ),
            "client_key",
        ),
    ];
    for (config, expected) in cases {
        let b = Beatd::with_config(&config);
        let out = b.cmd(&["check", "-c", "beatd.toml"]).output().expect("check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{config}\n---\n{stderr}");
    }
}
