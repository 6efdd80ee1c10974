//! The proxy's errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to load the hangar CA from {}: {reason}", path.display())]
    Ca { path: PathBuf, reason: String },
    #[error("failed to make a certificate for {host}: {reason}")]
    Leaf { host: String, reason: String },
    #[error("failed to read CA certificates from {}: {reason}", path.display())]
    NoCertificate { path: PathBuf, reason: String },
    #[error("failed to read upstream CA certificates: {0}")]
    Roots(String),
    #[error("failed to serve the proxy: {0}")]
    Serve(std::io::Error),
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;
