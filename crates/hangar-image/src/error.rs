//! Typed errors of image handling. Messages read after "failed to ...".

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] hangar_store::StoreError),
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to unpack layer: entry `{entry}` {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("failed to unpack layer: {0}")]
    Unpack(String),
    #[error("failed to unpack layer {layer}: it unpacks to more than {}, the limit for a layer of {} compressed", hangar_spec::format_bytes(*max), hangar_spec::format_bytes(*compressed))]
    LayerTooLarge {
        layer: String,
        compressed: u64,
        max: u64,
    },
    #[error("failed to unpack layer {layer}: its content hashes to {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("failed to pack `{}` into a layer: it {reason}", path.display())]
    Pack { path: PathBuf, reason: String },
    #[error("failed to build image: {0}")]
    Build(String),
    #[error("failed to build image: `{name}` is not a Debian package name: {reason}")]
    BadPackageName { name: String, reason: &'static str },
    #[error("failed to build image `{name}`: it is no built-in image: use debian-<suite> or {}, or give a base with --from debian-<suite>", hangar_spec::DEFAULT_IMAGE)]
    NoRecipe { name: String },
    #[error("failed to find image `{name}`: it is built on this machine, once, with `hangar image build {name}`")]
    NotBuilt { name: String },
    #[error("failed to build image: `--from {from}` is not debian-<suite> (e.g. debian-bookworm)")]
    BadBase { from: String },
    #[error("failed to download the wheel of `{wheel}` with the host's pip: {reason}")]
    Wheel { wheel: String, reason: String },
    #[error("failed to import {}: {reason}", path.display())]
    Import { path: PathBuf, reason: String },
    #[error("failed to {action} {reference}: {reason}")]
    Registry {
        action: &'static str,
        reference: String,
        reason: String,
    },
    #[error("failed to read `{path}` from the image's layers: {problem}")]
    Stack {
        path: String,
        problem: crate::stack::StackProblem,
    },
    #[error("failed to read image {image}: {reason}")]
    BadImage { image: String, reason: String },
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}
