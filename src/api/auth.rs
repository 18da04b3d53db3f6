//! Who may use the API: the token, the `Host` a request names, and where a mutation comes from.
//!
//! beatd runs as root, and `POST /api/jobs/NAME/run` runs root's commands. Three kinds of caller
//! must not get there:
//! - **another local account**: loopback is reachable by every user of the machine. Mutations
//!   therefore need a bearer token by default; beatd makes one at its first start, readable by
//!   its own user only, unless `token_file` names one. `allow_unauthenticated = true` is the
//!   only way out, and beatd warns about it at every start. Over a unix socket the socket's
//!   permissions decide instead.
//! - **a web page in the operator's browser** posting cross-origin (a form, or `fetch` with
//!   `Content-Type: text/plain`, needs no preflight): a mutation whose `Origin` is not this
//!   API's own, or whose `Sec-Fetch-Site` says cross-site, is refused. No CORS header is ever
//!   sent.
//! - **a DNS-rebinding page**, whose name now resolves to 127.0.0.1: every request must name
//!   this API in `Host` (the listen address, a loopback name, an IP address, or a name in
//!   `allowed_hosts`); a page's own name is refused.
//!
//! Reads that scrapers need (`/healthz`, `/metrics`) stay open; the job list and run history
//! are open on loopback and need the token on any other address.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiConfig, Listen};
use super::{ApiError, error};

/// The token beatd makes for itself, in the state folder.
pub const TOKEN_FILE: &str = "api-token";

/// How a request reached the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    /// A unix socket: its file permissions have decided who may connect.
    Unix,
}

/// The rules of one API server.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Mutations (and reads off loopback) need it; `None` with `allow_unauthenticated`.
    token: Option<Arc<str>>,
    /// Host names accepted besides IP addresses and loopback names.
    hosts: Vec<String>,
    /// The job list and history need the token too (a listener beyond loopback).
    private_reads: bool,
}

impl Guard {
    pub fn new(token: Option<String>, api: &ApiConfig) -> Guard {
        let mut hosts = api.allowed_hosts.clone();
        if let Listen::Tcp(addr) = api.listen {
            hosts.push(addr.ip().to_string());
        }
        let private_reads = token.is_some() && matches!(api.listen, Listen::Tcp(a) if !a.ip().is_loopback());
        Guard { token: token.map(Arc::from), hosts, private_reads }
    }

    /// A guard that lets every request through (tests of other parts).
    pub fn open() -> Guard {
        Guard::default()
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.hosts.iter().any(|h| h == &name)
    }

    fn token_ok(&self, request: &Request) -> bool {
        let Some(token) = &self.token else { return true };
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
    }
}

/// The name part of a `Host` header, lower case: no port, no IPv6 brackets.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .map_or(host, |(name, port)| if port.chars().all(|c| c.is_ascii_digit()) { name } else { host })
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn transport(request: &Request) -> Transport {
    request.extensions().get::<Transport>().copied().unwrap_or(Transport::Tcp)
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Every request: the `Host` must name this API (DNS rebinding), and no request may come from
/// a page of another site when it changes state.
pub async fn every_request(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if transport(&request) == Transport::Tcp {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string);
        match host {
            None => return error(StatusCode::BAD_REQUEST, "the request has no Host header"),
            Some(h) if !guard.host_allowed(&h) => {
                return error(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!("Host \"{}\" is not a name of this API (add it to [api] allowed_hosts)", host_name(&h)),
                );
            }
            Some(_) => {}
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD && cross_origin(&request) {
        return error(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    next.run(request).await
}

/// Whether a browser says this request comes from a page of another origin.
fn cross_origin(request: &Request) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return true };
    let origin = origin.to_str().unwrap_or("null");
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    authority.is_none_or(|a| !a.eq_ignore_ascii_case(host))
}

/// Mutations: the token, except over a unix socket.
pub async fn mutation(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if transport(&request) == Transport::Tcp && !guard.token_ok(&request) {
        return unauthorized();
    }
    next.run(request).await
}

/// The job list and history: open on loopback and over a unix socket, the token elsewhere.
pub async fn private_read(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if guard.private_reads && transport(&request) == Transport::Tcp && !guard.token_ok(&request) {
        return unauthorized();
    }
    next.run(request).await
}

/// The token the API needs, at start: `None` with `allow_unauthenticated` (and a warning);
/// `token_file`'s; or the one in `state_dir`, made now if there is none yet.
pub fn token_at_start(api: &ApiConfig, state_dir: &Path) -> Result<Option<String>, ApiError> {
    if api.allow_unauthenticated {
        tracing::warn!(
            "[api] allow_unauthenticated = true: anyone who can reach {} can run, pause and resume jobs",
            api.listen
        );
        return Ok(None);
    }
    let path = api.token_path(state_dir);
    if api.token_file.is_none() && !path.exists() {
        make_token(&path)?;
        tracing::info!("made the API token {} (readable by beatd's user only)", path.display());
    }
    let token = read_token(&path)?;
    warn_if_readable(&path);
    Ok(Some(token))
}

/// Reads a token file; an empty one is an error, never "no token".
pub fn read_token(path: &Path) -> Result<String, ApiError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ApiError::ReadToken { path: path.to_path_buf(), source })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ApiError::EmptyToken(path.to_path_buf()));
    }
    Ok(token.to_string())
}

fn make_token(path: &Path) -> Result<(), ApiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let made = |source| ApiError::MakeToken { path: path.to_path_buf(), source };
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true) // O_EXCL: never a name that exists, not even a planted link
        .mode(0o600)
        .open(path)
        .map_err(made)?;
    file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(made)
}

fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.mode() & 0o044 != 0
    {
        tracing::warn!(
            "the API token {} can be read by other users (mode {:04o}): anyone who reads it can run and pause jobs; chmod 600 it",
            path.display(),
            m.mode() & 0o7777
        );
    }
}

/// Where the CLI finds the token: as the daemon does, without making one.
pub fn token_for_client(api: &ApiConfig, state_dir: &Path) -> (PathBuf, Result<String, ApiError>) {
    let path = api.token_path(state_dir);
    let token = read_token(&path);
    (path, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_bearer_credentials() {
        assert_eq!(host_name("LocalHost:8089"), "localhost");
        assert_eq!(host_name("[::1]:8089"), "::1");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn hosts_that_name_this_api() {
        let g = Guard { hosts: vec!["beatd.internal".into()], ..Guard::default() };
        for ok in ["127.0.0.1:8089", "localhost", "[::1]:8089", "10.0.0.5", "beatd.internal:8089", "a.localhost"] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for no in ["attacker.example", "attacker.example:8089", "localhost.attacker.example", ""] {
            assert!(!g.host_allowed(no), "{no}");
        }
    }
}
