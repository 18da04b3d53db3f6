//! Serving the API: the accept loop, with the limits a root daemon's port needs.
//!
//! Whoever can connect can hold a socket open, and every socket is a file descriptor. A
//! thousand idle connections used to take all of them: command jobs then failed to start
//! ("Too many open files") and `/healthz` never answered, while the timer loop looked fine.
//! So connections are limited here, not left to the process's descriptor limit:
//! - at most `max_connections` at once, and never more than half the soft descriptor limit:
//!   the rest is kept for jobs, the state files and the brokers;
//! - when every place is taken, the connection idle the longest (no request in progress) is
//!   closed to make room, and the new one is served once that socket is really closed: a new
//!   client, a monitor's `/healthz` say, is always served, a flood of idle sockets only
//!   churns, and the sockets open never pass the cap by more than the one being accepted;
//! - a client must send a request's headers within 10 s, and a connection without a request
//!   for 30 s is closed;
//! - an accept that fails for want of descriptors anyway (jobs took them) is noted in the
//!   loop's health, so `/healthz` says so.
//!
//! `listen = "unix:/run/beatd/api.sock"` serves the same API over a unix socket, created
//! `0660`: its file permissions (and its folder's) decide who may use the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::auth::Transport;
use super::{ApiError, Listen};
use crate::status::Board;

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without a request in progress for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Binds `listen`. A unix socket left by a beatd that stopped is replaced; a path that is
    /// not a socket, or a socket someone still listens on, is an error.
    pub async fn bind(listen: &Listen) -> Result<Listener, ApiError> {
        match listen {
            Listen::Tcp(addr) => tokio::net::TcpListener::bind(addr)
                .await
                .map(Listener::Tcp)
                .map_err(|source| ApiError::Listen { listen: addr.to_string(), source }),
            Listen::Unix(path) => bind_unix(path).map(|l| Listener::Unix(l, path.clone())),
        }
    }
}

fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ApiError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path_buf = || path.to_path_buf();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ApiError::SocketInUse(path_buf()));
            }
            std::fs::remove_file(path).map_err(|source| ApiError::OldSocket { path: path_buf(), source })?;
        }
        Ok(_) => return Err(ApiError::NotASocket(path_buf())),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|source| ApiError::Listen { listen: format!("unix:{}", path.display()), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|source| ApiError::SocketMode { path: path_buf(), source })?;
    Ok(listener)
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Connections {
    next: u64,
    live: BTreeMap<u64, Connection>,
}

struct Connection {
    /// Requests in progress.
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

/// The number of connections served at once: the configured cap, or half the soft descriptor
/// limit if that is lower.
pub fn connection_cap(max_connections: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    max_connections.min(usize::try_from(soft / 2).unwrap_or(usize::MAX)).max(1)
}

/// Serves `app` on `listener` until `shutdown` is cancelled; requests in progress then get a
/// few seconds to finish.
pub async fn serve(listener: Listener, app: Router, cap: usize, board: Arc<Board>, shutdown: CancellationToken) {
    let conns = Arc::new(Mutex::new(Connections::default()));
    // A place per open socket, held by its task until the socket is closed: evicting marks a
    // connection for closing, and the new one waits for the place to be really free, so the
    // descriptors in use never pass `cap` + 1 however fast clients connect.
    let places = Arc::new(tokio::sync::Semaphore::new(cap));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = accept(&listener) => a,
        };
        let (stream, transport) = match accepted {
            Ok(s) => s,
            Err(e) => {
                if matches!(e.raw_os_error(), Some(code) if code == libc_emfile() || code == libc_enfile()) {
                    board.health.out_of_descriptors();
                    tracing::error!("HTTP API: cannot accept a connection: {e}");
                } else {
                    tracing::warn!("HTTP API: cannot accept a connection: {e}");
                }
                // Give descriptors a moment to come back instead of spinning on the error.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let place = match places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                let evicted = {
                    let mut c = conns.lock().unwrap_or_else(|p| p.into_inner());
                    let idle =
                        c.live.iter().find(|(_, conn)| conn.busy.load(Ordering::Relaxed) == 0).map(|(id, _)| *id);
                    idle.and_then(|id| c.live.remove(&id)).map(|oldest| oldest.close.cancel()).is_some()
                };
                if !evicted {
                    tracing::warn!("HTTP API: {cap} requests in progress; a new connection is refused");
                    continue; // every place serves a request: this one is closed
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    place = places.clone().acquire_owned() => match place {
                        Ok(place) => place,
                        Err(_) => break,
                    },
                }
            }
        };
        let (id, busy, close) = {
            let mut c = conns.lock().unwrap_or_else(|p| p.into_inner());
            let id = c.next;
            c.next += 1;
            let conn = Connection { busy: Arc::new(AtomicUsize::new(0)), close: shutdown.child_token() };
            let handles = (id, conn.busy.clone(), conn.close.clone());
            c.live.insert(id, conn);
            handles
        };
        let (app, conns) = (app.clone(), conns.clone());
        tracker.spawn(async move {
            match stream {
                Stream::Tcp(s) => connection(s, transport, app, busy, close).await,
                Stream::Unix(s) => connection(s, transport, app, busy, close).await,
            }
            conns.lock().unwrap_or_else(|p| p.into_inner()).live.remove(&id);
            drop(place); // the socket is closed: its place is free
        });
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("HTTP API: connections still open at shutdown were closed");
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

fn libc_emfile() -> i32 {
    rustix::io::Errno::MFILE.raw_os_error()
}

fn libc_enfile() -> i32 {
    rustix::io::Errno::NFILE.raw_os_error()
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Stream, Transport)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), Transport::Tcp))
        }
        Listener::Unix(l, _) => Ok((Stream::Unix(l.accept().await?.0), Transport::Unix)),
    }
}

/// One connection: HTTP/1.1 with the header timeout, closed when idle too long, when its place
/// is needed (`close`), or at shutdown.
async fn connection<S>(stream: S, transport: Transport, app: Router, busy: Arc<AtomicUsize>, close: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = tokio::time::Instant::now();
    let ms = move || i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let last_active = Arc::new(AtomicI64::new(0));
    let service = {
        let (busy, last_active) = (busy.clone(), last_active.clone());
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(transport);
            busy.fetch_add(1, Ordering::Relaxed);
            let (app, busy, last_active) = (app.clone(), busy.clone(), last_active.clone());
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                last_active.store(ms(), Ordering::Relaxed);
                busy.fetch_sub(1, Ordering::Relaxed);
                response
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    loop {
        let idle_for = Duration::from_millis((ms() - last_active.load(Ordering::Relaxed)).max(0).unsigned_abs());
        let wait = IDLE_TIMEOUT.saturating_sub(idle_for);
        tokio::select! {
            _ = &mut conn => return,
            () = close.cancelled() => {
                if busy.load(Ordering::Relaxed) == 0 {
                    return;
                }
                // Shutdown with a request in progress: let it finish, briefly.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut conn).await;
                return;
            }
            () = tokio::time::sleep(wait) => {
                let idle = ms() - last_active.load(Ordering::Relaxed) >= IDLE_TIMEOUT.as_millis() as i64;
                if idle && busy.load(Ordering::Relaxed) == 0 {
                    return; // dropped: the socket closes
                }
            }
        }
    }
}
