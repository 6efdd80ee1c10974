//! TLS for the daemon's TCP listeners: the server's certificate and key read from the
//! files `hangar serve --tls-cert/--tls-key` name, a listener that hands axum only
//! connections whose handshake is done, and the client's trust (the system's roots plus
//! a private CA).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its handshake: one that stalls holds a task, not the
/// listener, but should not hold it for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for axum to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Which of the two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Certificate,
    Key,
}

impl std::fmt::Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFile::Certificate => "certificate",
            TlsFile::Key => "key",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read the TLS {file} {}: {source}", path.display())]
    Read {
        file: TlsFile,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read the TLS {file} {}: it holds no {expected}", path.display())]
    Missing {
        file: TlsFile,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("failed to read the TLS {file} {}: {source}", path.display())]
    Pem {
        file: TlsFile,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "failed to use the TLS key {}: it does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "failed to use the TLS certificate {} with the key {}: {source}",
        cert.display(),
        key.display()
    )]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    /// A private CA's file, or the client's trust store.
    #[error(transparent)]
    Trust(#[from] hangar_net::NetError),
}

/// The server's configuration: the certificate chain in `cert` (leaf first, PEM) and its
/// private key in `key` (PKCS#8, PKCS#1 or SEC1, PEM).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |file, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            file,
            path: path.to_path_buf(),
            source,
        })
    };
    let pem_err = |file, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { file, path, source }
    };
    let cert_pem = read(TlsFile::Certificate, cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(TlsFile::Certificate, cert))?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            file: TlsFile::Certificate,
            path: cert.to_path_buf(),
            expected: "PEM certificate",
        });
    }
    let key_pem = read(TlsFile::Key, key)?;
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::Missing {
                file: TlsFile::Key,
                path: key.to_path_buf(),
                expected: "PEM private key (PKCS#8, PKCS#1 or SEC1)",
            })
        }
        Err(e) => return Err(pem_err(TlsFile::Key, key)(e)),
    };
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            source => TlsError::Config {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source,
            },
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client's configuration: the system's roots, plus the CA certificates in `ca`
/// (PEM) for a daemon whose certificate a private CA signed.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let extra = match ca {
        Some(path) => hangar_net::trust::read_cas(&[path.to_path_buf()])?,
        None => Vec::new(),
    };
    Ok(hangar_net::upstream_tls(extra.concat().as_bytes())?)
}

/// A TCP listener whose connections axum gets only once their TLS handshake is done.
/// Handshakes run side by side, so a client that stalls in one delays nobody else.
pub struct TlsListener {
    local: SocketAddr,
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        mut tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            loop {
                // axum's own accept: it logs and waits out errors such as EMFILE.
                let (stream, peer) = axum::serve::Listener::accept(&mut tcp).await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, stream))
                        .await
                    {
                        Ok(Ok(Some(tls))) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Ok(None)) => tracing::debug!("{peer} spoke plain HTTP to TLS"),
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            accepted,
            accepting,
        })
    }
}

/// The first byte of every TLS connection: a handshake record's type.
const TLS_HANDSHAKE: u8 = 0x16;

/// The connection's TLS stream, or `None` for a plain HTTP client, which is told in
/// plain HTTP what it did wrong rather than left to make sense of a TLS alert.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE {
        refuse_plain(stream).await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

async fn refuse_plain(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = crate::wire::ErrorBody {
        error: crate::wire::ErrorInfo {
            code: "bad-request".into(),
            message: "failed to answer: this listener speaks TLS only (use an https:// URL)".into(),
            diagnostics: Vec::new(),
        },
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Closing with the request unread would reset the connection under the answer.
    let mut unread = [0u8; 4096];
    while matches!(stream.read(&mut unread).await, Ok(n) if n > 0) {}
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // axum drops the listener on shutdown: stop accepting then.
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task is gone only once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` and its key, PEM.
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn check(cert: &str, key: &str, expected: Option<&str>) {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        let got = server_config(&c, &k).err().map(|e| {
            e.to_string()
                .replace(&c.display().to_string(), "CERT")
                .replace(&k.display().to_string(), "KEY")
        });
        match (got, expected) {
            (None, None) => {}
            (Some(got), Some(expected)) => assert!(got.starts_with(expected), "{got}"),
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn bad_certificate_and_key_files_are_errors_naming_the_file() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        check(&cert, &key, None);
        check(
            &key,
            &key,
            Some("failed to read the TLS certificate CERT: it holds no PEM certificate"),
        );
        check(
            &cert,
            &cert,
            Some("failed to read the TLS key KEY: it holds no PEM private key"),
        );
        check(
            &cert,
            &other_key,
            Some("failed to use the TLS key KEY: it does not match the certificate in CERT"),
        );
        check(
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
            &key,
            Some("failed to read the TLS certificate CERT: "),
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = server_config(&missing, &missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "failed to read the TLS certificate {}: ",
                missing.display()
            )),
            "{e}"
        );
    }
}
