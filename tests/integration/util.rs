//! The harness: a temp dir with a config ([`Beatd`]), the real `beatd` binary run against it
//! ([`Running`], killed on drop), its HTTP API ([`Api`]), and the servers tests stop and
//! start themselves (a Redis of their own, a TCP proxy that cuts a stream).

use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;
use tempfile::TempDir;

pub struct Beatd {
    pub dir: TempDir,
}

impl Beatd {
    /// A temp dir holding `beatd.toml` with `config`.
    /// A config beatd accepts must pass its JSON Schema too (see `schema`).
    pub fn with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("beatd.toml"), config).expect("write config");
        crate::schema::accepted_configs_pass(config, dir.path());
        Beatd { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces `name` the way editors save: a new file renamed over the old one.
    /// A config file (`.toml`) beatd accepts must pass its JSON Schema too.
    pub fn write(&self, name: &str, text: &str) {
        if name.ends_with(".toml") {
            crate::schema::accepted_configs_pass(text, self.dir.path());
        }
        let tmp = self.path(&format!(".{}.tmp", name.replace('/', "_")));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.path(name)).expect("rename");
    }

    pub fn config(&self) -> PathBuf {
        self.path("beatd.toml")
    }

    /// `beatd ARGS` run in the temp dir, with a fixed zone and no inherited config path.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cargo_bin("beatd"));
        cmd.current_dir(self.dir.path()).env("TZ", "UTC").env_remove("BEATD_CONFIG").env_remove("RUST_LOG").args(args);
        cmd
    }

    /// `beatd run --config beatd.toml EXTRA` in the background, stderr captured to `beatd.log`;
    /// killed when the returned guard is dropped, whatever the test's asserts did.
    pub fn run(&self, extra: &[&str]) -> Running {
        self.run_with_env(extra, &[])
    }

    /// [`Beatd::run`] with these environment variables set.
    pub fn run_with_env(&self, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Running {
        self.launch(extra, env, None)
    }

    /// [`Beatd::run`] under a soft limit of `nofile` open descriptors (`ulimit -n`).
    pub fn run_with_nofile(&self, nofile: u64) -> Running {
        self.launch(&[], &[], Some(nofile))
    }

    fn launch(&self, extra: &[&str], env: &[(&str, &std::ffi::OsStr)], nofile: Option<u64>) -> Running {
        let mut running = Running {
            dir: self.dir.path().to_path_buf(),
            args: extra.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_os_string())).collect(),
            nofile,
            child: None,
        };
        running.spawn();
        running
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("beatd.log")).unwrap_or_default()
    }
}

/// A `beatd run` process of a test. Dropping it kills the process (SIGKILL), so a failed
/// assert never leaves a daemon behind; a test that cares how it ends calls [`Running::stop`].
pub struct Running {
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
    /// `ulimit -n` for the process.
    nofile: Option<u64>,
    child: Option<Child>,
}

impl Running {
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("beatd.log")).expect("log file");
        let mut cmd = match self.nofile {
            Some(n) => {
                let mut c = StdCommand::new("bash");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")]).arg(cargo_bin("beatd"));
                c
            }
            None => StdCommand::new(cargo_bin("beatd")),
        };
        let child = cmd
            .current_dir(&self.dir)
            .env("TZ", "UTC")
            .env_remove("BEATD_CONFIG")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("run")
            .args(["--config", "beatd.toml"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn beatd");
        self.child = Some(child);
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("beatd is running")
    }

    /// What beatd has logged so far (this process's run: a restart starts a new log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("beatd.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.child(), sig);
    }

    /// Waits until the log holds `needle`, `limit` at most; panics with the log if it does not.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        assert!(
            wait_for(limit, || self.log().contains(needle)),
            "no {needle:?} in the log within {limit:?}:\n{}",
            self.log()
        );
    }

    /// Waits until the daemon says it has started (config loaded, API listening).
    pub fn wait_started(&self) {
        self.wait_for_log("beatd started", Duration::from_secs(5));
    }

    /// Waits for the process to exit, `limit` at most (then kills it); the exit status if it
    /// exited by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("beatd is running");
        wait_exit(&mut child, limit)
    }

    /// SIGTERM, and an exit with status 0 within 25 s: a clean stop, asserted.
    pub fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let code = self.wait_exit(Duration::from_secs(25)).and_then(|s| s.code());
        assert_eq!(code, Some(0), "beatd did not stop cleanly:\n{}", self.log());
    }

    /// SIGKILL, as a crash would: nothing gets to finish.
    pub fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(5)).expect("a killed process exits");
    }

    /// Starts it again after [`Running::stop`] or [`Running::kill`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "beatd is still running");
        self.spawn();
    }

    /// The daemon's HTTP API, at the `[api] listen` address of its config; waits until it
    /// answers.
    pub fn api(&self) -> Api {
        let text = std::fs::read_to_string(self.dir.join("beatd.toml")).expect("config");
        let config: toml::Table = text.parse().expect("the config is TOML");
        let listen = config["api"]["listen"].as_str().expect("[api] listen").to_string();
        let token_file = config["api"].get("token_file").and_then(|t| t.as_str()).map(PathBuf::from);
        let api = Api {
            base: format!("http://{listen}"),
            token_file: token_file.unwrap_or_else(|| self.dir.join("state/api-token")),
        };
        // This daemon's own listener (its log says so), not another test's on the same port.
        let bound = format!("HTTP API on {} (", api.base);
        let up = wait_for(Duration::from_secs(5), || {
            self.log().contains(&bound)
                && current_thread().block_on(async { reqwest::get(api.url("/healthz")).await.is_ok() })
        });
        assert!(up, "the API does not answer at {}:\n{}", api.base, self.log());
        api
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A running daemon's HTTP API, over real HTTP.
pub struct Api {
    pub base: String,
    token_file: PathBuf,
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The token the daemon uses (the one it made, or its `token_file`).
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file).expect("the API token").trim().to_string()
    }

    /// One request; the body as JSON when it is JSON, else as a string.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        http(method, &self.url(path), token)
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body, _) = self.request("GET", path, None);
        (status, body)
    }

    /// A POST with the daemon's token.
    pub fn post(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body, _) = self.request("POST", path, Some(&self.token()));
        (status, body)
    }
}

/// One HTTP request; the body as JSON when it is JSON, else as a string.
pub fn http(method: &str, url: &str, token: Option<&str>) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    current_thread().block_on(async {
        let mut req = reqwest::Client::new().request(method.parse().expect("method"), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("beatd answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)), headers)
    })
}

/// Waits, a few seconds at most, until `cond` holds; returns whether it did.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, sig).expect("send signal");
}

/// Waits for the child to exit, a few seconds at most.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// A port no one listens on, for a peer that must stay down: tcpmux's port 1. A freed
/// [`free_port`] would not do: another test's server, bound to an ephemeral port meanwhile,
/// can take it (it did, in CI), and the peer is then up.
pub const CLOSED_PORT: u16 = 1;

/// A port nothing listens on: bound, then released.
///
/// Never the same port twice in this test process: the kernel may hand a port just probed
/// and released to the next probe, and two tests running side by side would then start
/// servers on one port (one daemon failed to bind while the other answered its health check).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `beatd history --json` of `job` as values, newest first (none before the daemon has made
/// its state database).
pub fn history(b: &Beatd, job: &str) -> Vec<serde_json::Value> {
    let out = b.cmd(&["history", "-c", "beatd.toml", "--job", job, "--json", "-n", "100000"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("no state database") {
        return Vec::new();
    }
    assert!(out.status.success(), "beatd history failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

/// A `redis-server` of the test's own, on a free port, that it can stop and start again
/// (the same port, the same data folder: it keeps an append-only file, so a restart keeps
/// what the test has not read yet).
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer { port: free_port(), dir: tempfile::tempdir().expect("temp dir"), child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) and waits until it answers.
    pub fn restart(&mut self) {
        let child = StdCommand::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("url");
        assert!(
            wait_for(Duration::from_secs(10), || client
                .get_connection()
                .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())),
            "redis-server did not start on port {}",
            self.port
        );
    }

    /// Stops it at once (SIGKILL after the append-only file is written by SHUTDOWN).
    pub fn stop(&mut self) {
        if let Ok(mut c) = redis::Client::open(self.url()).expect("url").get_connection() {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut c);
        }
        if let Some(mut child) = self.child.take() {
            wait_exit(&mut child, Duration::from_secs(5));
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).expect("url").get_connection().expect("redis answers")
    }

    /// Every entry of `list`, oldest first for LPUSH producers (the order BRPOP takes them).
    pub fn lpushed(&self, list: &str) -> Vec<String> {
        let mut items: Vec<String> =
            redis::cmd("LRANGE").arg(list).arg(0).arg(-1).query(&mut self.conn()).expect("lrange");
        items.reverse();
        items
    }

    /// Every entry of `list` in list order (oldest first for RPUSH producers).
    pub fn rpushed(&self, list: &str) -> Vec<String> {
        redis::cmd("LRANGE").arg(list).arg(0).arg(-1).query(&mut self.conn()).expect("lrange")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the tests' virtualenv holds: Celery with its Redis client and solar schedules
/// (interoperability, imports), jsonschema (the config's schema), aiosmtpd (a real SMTP server).
const PYTHON_PACKAGES: &[&str] = &["celery[redis,solar]>=5.4,<6", "jsonschema>=4.17,<5", "aiosmtpd>=1.4,<2"];

/// The tests' Python virtualenv, made (or completed) on first use under `target/` (in CI too:
/// a missing Python or package index fails the test, loudly).
pub fn python_venv() -> PathBuf {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("tests-venv");
        let marker = venv.join("beatd-packages.txt");
        let want = PYTHON_PACKAGES.join("\n");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(want.as_str()) {
            let ok = (venv.join("bin").join("pip").exists()
                || StdCommand::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success()))
                && StdCommand::new(venv.join("bin").join("pip"))
                    .args(["install", "-q"])
                    .args(PYTHON_PACKAGES)
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(ok, "cannot make the tests' virtualenv at {}", venv.display());
            std::fs::write(&marker, &want).expect("write the marker");
        }
        venv
    })
    .clone()
}

/// The `celery` program of the tests' virtualenv.
pub fn celery_bin() -> PathBuf {
    python_venv().join("bin").join("celery")
}

/// The Python of the tests' virtualenv.
pub fn venv_python() -> PathBuf {
    python_venv().join("bin").join("python")
}

/// A TCP proxy from a free local port to `upstream`, which a test can cut in the middle of a
/// stream: after `arm(n)`, the next `n` bytes from the client go through and the rest are
/// dropped; the server's answers to what it got still flow back for a moment, and then both
/// sides are closed. The server sees a connection that died mid-frame; the client sees it drop
/// after some of its writes, without answers to the ones that never arrived. Only one
/// connection is cut per `arm`: the client's reconnection goes through.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    upstream: std::net::SocketAddr,
    /// Bytes still allowed up before the cut, when armed.
    budget: std::sync::Mutex<Option<usize>>,
    cuts: std::sync::atomic::AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        use std::net::ToSocketAddrs;
        let upstream = upstream.to_socket_addrs().expect("address").next().expect("an address");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = std::sync::Arc::new(ProxyState {
            upstream,
            budget: std::sync::Mutex::new(None),
            cuts: Default::default(),
            stop: Default::default(),
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(s.upstream) else { continue };
                let s = s.clone();
                std::thread::spawn(move || pump(&s, client, server));
            }
        });
        Proxy { port, state }
    }

    /// Cuts the connection after `bytes` more bytes from the client.
    pub fn arm(&self, bytes: usize) {
        *self.state.budget.lock().expect("lock") = Some(bytes);
    }

    /// How many connections were cut.
    pub fn cuts(&self) -> usize {
        self.state.cuts.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(state: &ProxyState, mut client: std::net::TcpStream, mut server: std::net::TcpStream) {
    use std::io::{Read, Write};
    let (mut from_server, mut to_client) = (server.try_clone().expect("clone"), client.try_clone().expect("clone"));
    let down = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from_server.read(&mut buf) {
            if n == 0 || to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
        let (pass, cut) = {
            let mut budget = state.budget.lock().expect("lock");
            match *budget {
                Some(left) if left <= n => {
                    *budget = None;
                    (left, true)
                }
                Some(left) => {
                    *budget = Some(left - n);
                    (n, false)
                }
                None => (n, false),
            }
        };
        if server.write_all(&buf[..pass]).is_err() {
            break;
        }
        if cut {
            state.cuts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The server answers what it got; then the connection dies.
            std::thread::sleep(Duration::from_millis(500));
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = down.join();
}

/// A RabbitMQ node of the test's own (its own name, ports and data folder) that it can stop
/// and start again, and give a TLS listener, without touching the machine's broker. It needs
/// root, as `rabbitmq-server` switches to the `rabbitmq` user, who must own the folder; tests
/// that use one are skipped otherwise. Starting one takes about four seconds.
pub struct RabbitNode {
    pub port: u16,
    /// The TLS listener, if the node has one.
    pub tls_port: Option<u16>,
    name: String,
    dist_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RabbitNode {
    /// Whether this process may start one (it runs as root).
    pub fn possible() -> bool {
        nix::unistd::Uid::effective().is_root()
    }

    /// A node with a plain listener and, given `(ca, cert, key)` PEM files, a TLS listener that
    /// verifies client certificates that are offered (and accepts clients without one).
    pub fn start(tls: Option<(&Path, &Path, &Path)>) -> RabbitNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let tls_port = tls.map(|_| free_port());
        let mut conf = format!("listeners.tcp.default = {port}\nloopback_users = none\n");
        if let (Some((ca, cert, key)), Some(p)) = (tls, tls_port) {
            for (src, name) in [(ca, "ca.pem"), (cert, "cert.pem"), (key, "key.pem")] {
                std::fs::copy(src, dir.path().join(name)).expect("copy a PEM file");
            }
            let at = |n: &str| dir.path().join(n).display().to_string();
            conf += &format!(
                "listeners.ssl.default = {p}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = false\n",
                at("ca.pem"),
                at("cert.pem"),
                at("key.pem")
            );
        }
        std::fs::write(dir.path().join("rabbitmq.conf"), conf).expect("rabbitmq.conf");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        let status = StdCommand::new("chown").arg("-R").arg("rabbitmq:rabbitmq").arg(dir.path()).status();
        assert!(status.is_ok_and(|s| s.success()), "chown to the rabbitmq user");
        let mut node = RabbitNode {
            port,
            tls_port,
            name: format!("beatd-test-{port}@localhost"),
            dist_port: free_port(),
            dir,
            child: None,
        };
        node.restart();
        node
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts it (again) and waits until its listeners take connections.
    pub fn restart(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("out.log")).expect("log");
        let child = StdCommand::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server must be installed");
        self.child = Some(child);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        let up = wait_for(Duration::from_secs(60), || {
            ports.iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        let out = std::fs::read_to_string(d.join("out.log")).unwrap_or_default();
        assert!(up, "RabbitMQ node {} did not start:\n{out}", self.name);
    }

    /// Stops it cleanly (`rabbitmqctl stop`: durable queues and persistent messages are kept)
    /// and waits until it is gone.
    pub fn stop(&mut self) {
        let _ = StdCommand::new("rabbitmqctl").args(["-n", &self.name, "stop"]).stdout(Stdio::null()).status();
        if let Some(mut child) = self.child.take() {
            wait_exit(&mut child, Duration::from_secs(20));
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        // The Erlang VM is a grandchild (rabbitmq-server switches users): kill it by its pid file.
        if let Some(pid) = std::fs::read_to_string(self.dir.path().join("pid")).ok().and_then(|p| p.trim().parse().ok())
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process killed when the test ends, however it ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ids` with no repeat, as a set.
pub fn once(ids: impl IntoIterator<Item = String>, what: &str) -> std::collections::BTreeSet<String> {
    let mut set = std::collections::BTreeSet::new();
    for id in ids {
        assert!(set.insert(id.clone()), "{what}: {id} arrived twice");
    }
    set
}
