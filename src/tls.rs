//! TLS material a config names for one peer: CA certificates to trust, and a client
//! certificate to present.
//!
//! Brokers (`rediss://`, `amqps://`), `http_check` jobs and webhook notifiers take the same
//! three keys: `ca_file`, `client_cert` and `client_key`, PEM files. They are checked when the
//! config is loaded (readable, and holding what they should), and read again at each new
//! connection, so a renewed certificate is used without a reload. Verification cannot be
//! turned off: a private CA is trusted by naming it, never by trusting everyone.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Makes ring the process's TLS crypto provider. The dependencies bring two (reqwest and sqlx
/// ring, lapin aws-lc-rs), and with two rustls cannot pick one for the libraries that ask it
/// for the process default (the Redis client does): it panics at the first `rediss://`
/// connection. Called first thing by `main` and by [`crate::daemon`]; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The most a PEM file may hold: a bundle of every public CA is about 250 KiB.
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates the peer's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (with its chain) and its key, for peers that ask for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The files' contents, checked.
#[derive(Clone, Default)]
pub struct TlsPem {
    /// PEM text of one or more CA certificates.
    pub ca: Option<Vec<u8>>,
    /// PEM text of the client certificate chain, and of its key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret.
        f.debug_struct("TlsPem").field("ca", &self.ca.is_some()).field("client", &self.client.is_some()).finish()
    }
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client.is_none()
    }

    /// Reads and checks the files: each CA file and certificate holds at least one
    /// certificate, the key file a private key.
    pub fn read(&self) -> Result<TlsPem, String> {
        let ca = match &self.ca_file {
            Some(p) => Some(certificates(p, "ca_file")?),
            None => None,
        };
        let client = match &self.client {
            Some((cert, key)) => {
                let cert = certificates(cert, "client_cert")?;
                let key_pem = read(key, "client_key")?;
                PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| format!("client_key {}: no private key in it ({e})", key.display()))?;
                Some((cert, key_pem))
            }
            None => None,
        };
        Ok(TlsPem { ca, client })
    }
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {key} {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {key} {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{key} {} is larger than {} MiB", path.display(), MAX_PEM_BYTES / (1024 * 1024)));
    }
    Ok(bytes)
}

fn certificates(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    let pem = read(path, key)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| format!("{key} {}: {e}", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!("{key} {}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in it", path.display()));
    }
    Ok(pem)
}

impl TlsPem {
    /// An HTTP client that trusts the CA file's certificates besides the system's, and
    /// presents the client certificate.
    pub fn http_client(&self) -> Result<reqwest::Client, String> {
        let mut builder = crate::http::builder();
        if let Some(ca) = &self.ca {
            for cert in reqwest::Certificate::from_pem_bundle(ca).map_err(|e| format!("ca_file: {e}"))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.client {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(|e| format!("client_cert: {e}"))?);
        }
        builder.build().map_err(|e| format!("cannot make an HTTP client: {}", crate::http::error_chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_certificates_or_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let files = TlsFiles { ca_file: Some(empty.clone()), client: None };
        let e = files.read().expect_err("no certificate");
        assert!(e.starts_with("ca_file ") && e.contains("no PEM certificate"), "{e}");
        let missing = TlsFiles { ca_file: Some(dir.path().join("missing.pem")), client: None };
        assert!(missing.read().expect_err("missing").starts_with("cannot read ca_file "));
        let cert = dir.path().join("cert.pem");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
        std::fs::write(&cert, made.cert.pem()).expect("write");
        let no_key = TlsFiles { ca_file: Some(cert.clone()), client: Some((cert.clone(), cert.clone())) };
        let e = no_key.read().expect_err("a certificate is not a key");
        assert!(e.starts_with("client_key ") && e.contains("no private key"), "{e}");
        let key = dir.path().join("key.pem");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write");
        let good = TlsFiles { ca_file: Some(cert.clone()), client: Some((cert, key)) };
        let pem = good.read().expect("valid files");
        assert!(!format!("{pem:?}").contains("PRIVATE"), "the key is never printed");
        pem.http_client().expect("a client");
    }
}
