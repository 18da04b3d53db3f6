//! HTTP as a client: the one client checks and notifiers share, and how a failed request is
//! said in one line.

/// One HTTP client for the whole daemon: connection pools are shared, TLS is verified with the
/// platform's roots (rustls; there is no switch to turn verification off).
pub fn client() -> reqwest::Client {
    builder().build().unwrap_or_else(|_| reqwest::Client::new())
}

/// The settings every beatd HTTP client has; [`crate::tls::TlsPem::http_client`] adds a CA and
/// a client certificate to them.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().user_agent(concat!("beatd/", env!("CARGO_PKG_VERSION")))
}

/// What went wrong with a request, said once: reqwest's outer layers ("error sending request
/// for url (...)", "client error (Connect)") repeat what the caller already says; the causes
/// below them say what happened ("tcp connect error: Connection refused").
pub fn error_chain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    let wrapper = |text: &str| text.starts_with("error sending request") || text.starts_with("client error (");
    source_chain(e, wrapper)
}

/// An error and its sources joined by `: `, each said once (a wrapper's text often repeats its
/// source's), leaving out those `skip` names; the error's own text when nothing is left.
pub fn source_chain(e: &(dyn std::error::Error + 'static), skip: impl Fn(&str) -> bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !skip(&text) && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}
