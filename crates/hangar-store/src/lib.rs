//! hangar's store: the data dir's layout ([`Bucket`], one owner per folder), the content
//! store (`content`: blobs, unpacked image layers, image records), the leases that keep
//! layers in use from every collector ([`LeaseKind`]), the metadata database ([`db`]) and
//! the one flock helper ([`lock`]). It knows nothing of containers.
//!
//! The data dir and everything directly in it are private to their owner (0700, 0600).

mod content;
pub mod db;
mod layout;
mod leases;
pub mod lock;
mod private;

use std::io;
use std::path::PathBuf;

pub use content::{
    config_digest, manifest_blobs, BlobWriter, Digest, GcReport, ImageName, ImageRecord,
};
pub use layout::Bucket;
pub use leases::{lease, LeaseKind};

/// Failures of the store. Messages read after "failed to ...".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to verify blob: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("invalid digest `{0}`: expected sha256: followed by 64 lowercase hex digits")]
    InvalidDigest(String),
    #[error(
        "invalid image name `{0}`: use letters, digits and . _ - / : @, at most 255 characters"
    )]
    InvalidImageName(String),
    #[error("failed to find image `{0}` (see `hangar image ls`)")]
    ImageNotFound(String),
    #[error("failed to find blob {0} in the store")]
    BlobNotFound(Digest),
    #[error("failed to parse {what} {digest}: {reason}")]
    Corrupt {
        what: &'static str,
        digest: Digest,
        reason: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// The data dir: its layout is [`Bucket`]'s, its content store's methods are in
/// `content`, its leases' in `leases`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}
