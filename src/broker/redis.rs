//! The Redis transport: one connection per broker, and a batch of messages sent as one
//! MULTI/EXEC pipeline: one round trip, all or nothing.
//!
//! After any error the connection is dropped and the next send makes a new one (the delivery
//! task paces those sends with its backoff), and every send has a deadline: a broker that
//! went away mid-request cannot hold the messages behind it.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::{BrokerUrl, QueueMessage, Sent, Side};
use crate::tls::TlsFiles;

/// A client that trusts only the CA file's certificates (with one) and presents the client
/// certificate (with one).
fn tls_client(url: &BrokerUrl, files: &TlsFiles) -> Result<redis::Client, String> {
    let pem = files.read()?;
    let certs = redis::TlsCertificates {
        client_tls: pem.client.map(|(client_cert, client_key)| redis::ClientTlsConfig { client_cert, client_key }),
        root_cert: pem.ca,
    };
    redis::Client::build_with_tls(url.secret(), certs).map_err(|e| format!("TLS settings: {e}"))
}

/// Messages per pipeline: a burst of 50 000 goes out as round trips of bounded size (each
/// message is copied into its command and again into the packed pipeline, so the size of a
/// pipeline is memory held twice over; 2 500 are as fast as 10 000 on loopback).
const CHUNK: usize = 2_500;

pub struct Redis {
    client: redis::Client,
    url: BrokerUrl,
    /// A CA and client certificate (`rediss://`), read again at each new connection.
    tls: TlsFiles,
    conn: Option<MultiplexedConnection>,
}

/// The most a send of one pipeline may take.
const SEND_DEADLINE: Duration = Duration::from_secs(15);

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redis")
    }
}

impl Redis {
    /// Connects at the first send: a broker that is down at start is not an error.
    pub fn new(url: &BrokerUrl, tls: &TlsFiles) -> Result<Redis, redis::RedisError> {
        let client = redis::Client::open(url.secret())?;
        Ok(Redis { client, url: url.clone(), tls: tls.clone(), conn: None })
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, String> {
        if self.conn.is_none() {
            if !self.tls.is_empty() {
                self.client = tls_client(&self.url, &self.tls)?;
            }
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(10)));
            let conn =
                self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Pushes `messages` in order, in transactions of at most `CHUNK`: one outcome per
    /// message. A transaction Redis answered is delivered; the failing one and those after it
    /// are to be sent again.
    pub async fn push(&mut self, messages: &[&QueueMessage]) -> Vec<Sent> {
        let mut out = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for m in chunk {
                match m.side {
                    Side::Left => pipe.lpush(&m.key, &m.payload).ignore(),
                    Side::Right => pipe.rpush(&m.key, &m.payload).ignore(),
                };
            }
            let result = match tokio::time::timeout(SEND_DEADLINE, self.connection()).await {
                Ok(Ok(conn)) => match tokio::time::timeout(SEND_DEADLINE, pipe.query_async::<()>(conn)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {}s", SEND_DEADLINE.as_secs())),
                },
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no connection within {}s", SEND_DEADLINE.as_secs())),
            };
            if let Err(e) = result {
                self.conn = None;
                out.resize(messages.len(), Sent::Retry(e));
                return out;
            }
            out.resize(out.len() + chunk.len(), Sent::Delivered);
        }
        out
    }
}
