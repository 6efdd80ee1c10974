//! OCI images for hangar: build from Debian packages (mmdebstrap), import OCI layouts and
//! `docker save` tarballs, pull from and push to registries, and unpack layers safely into
//! the store. This crate never runs a container.

mod build;
mod error;
mod import;
pub mod pack;
mod recipe;
mod registry;
pub mod stack;
pub mod unpack;

use std::path::PathBuf;

use hangar_store::{Digest, ImageName, ImageRecord, Store};
use oci_spec::image::ImageManifest;

pub use build::{apt_sources_for, build_debian};
pub use error::{ImageError, Result};
pub use import::import;
pub use recipe::{BuildOptions, PackageName, Recipe, Suite, DEFAULT_PACKAGES, DEFAULT_RECIPE};
pub use registry::{fetch, pull, push, push_manifest, registry_of, RegistryOptions};
pub use stack::{LayerStack, StackProblem};

/// Receives one line of progress at a time (shown on stderr by the CLI).
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Stores a manifest and names it; every blob it references must already be stored.
pub fn record_image(store: &Store, name: &ImageName, manifest_bytes: &[u8]) -> Result<ImageRecord> {
    let manifest: ImageManifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| ImageError::BadImage {
            image: name.to_string(),
            reason: format!("bad manifest: {e}"),
        })?;
    let (digest, _) = store.write_blob(manifest_bytes, None)?;
    let size = manifest.layers().iter().map(|l| l.size()).sum();
    let rec = ImageRecord {
        name: name.clone(),
        manifest: digest,
        created_ms: chrono::Utc::now().timestamp_millis(),
        size,
    };
    store.put_image(&rec)?;
    Ok(rec)
}

/// The unpacked layer directories of an image, top-most first (overlay's lowerdir order),
/// unpacking any that are missing. A layer whose content does not match the config's
/// diff_id is refused and not kept.
pub fn layer_dirs(store: &Store, rec: &ImageRecord) -> Result<Vec<PathBuf>> {
    Ok(layers(store, rec)?.into_iter().map(|(_, p)| p).collect())
}

/// Like [`layer_dirs`], with each layer's diff_id (for leases).
pub fn layers(store: &Store, rec: &ImageRecord) -> Result<Vec<(Digest, PathBuf)>> {
    let manifest = store.manifest(&rec.manifest)?;
    layers_of(store, &manifest, rec.name.as_str())
}

/// Unpacks the layers of a manifest before it is named (import, pull): an image whose
/// layers are refused is never recorded.
pub(crate) fn unpack_manifest(
    store: &Store,
    name: &ImageName,
    manifest_bytes: &[u8],
) -> Result<()> {
    let manifest: ImageManifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| ImageError::BadImage {
            image: name.to_string(),
            reason: format!("bad manifest: {e}"),
        })?;
    layers_of(store, &manifest, name.as_str()).map(drop)
}

fn layers_of(
    store: &Store,
    manifest: &ImageManifest,
    image: &str,
) -> Result<Vec<(Digest, PathBuf)>> {
    let config = store.config(&hangar_store::config_digest(manifest)?)?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::BadImage {
            image: image.to_string(),
            reason: format!(
                "{} layers but {} diff_ids in the config",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut out = Vec::new();
    for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let blob: Digest = layer.digest().to_string().parse()?;
        let diff_id: Digest = diff_id.parse()?;
        let dir = ensure_layer(store, &blob, &diff_id)?;
        out.push((diff_id, dir));
    }
    out.reverse();
    Ok(out)
}

fn ensure_layer(store: &Store, blob: &Digest, diff_id: &Digest) -> Result<PathBuf> {
    if store.has_layer(diff_id) {
        return Ok(store.layer_dir(diff_id));
    }
    let staging = store.staging_dir()?;
    let actual = unpack_blob(store, blob, staging.path())?;
    if &actual != diff_id {
        return Err(ImageError::DiffIdMismatch {
            layer: blob.to_string(),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(store.commit_layer(staging, diff_id)?)
}

/// Unpacks a stored layer blob into `dest` within the default [`unpack::UnpackLimits`];
/// its diff_id.
pub fn unpack_blob(store: &Store, blob: &Digest, dest: &std::path::Path) -> Result<Digest> {
    let file = store.open_blob(blob)?;
    let compressed = file
        .metadata()
        .map_err(error::io_err("inspect", store.blob_path(blob)))?
        .len();
    let budget = unpack::Budget::new(
        &unpack::UnpackLimits::default(),
        blob.to_string(),
        compressed,
    );
    unpack::unpack_layer(file, dest, &budget)
}

/// What an image's config says every process starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    /// `Env` of the config, in order, with `HOME=/root` added when the image sets none.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
}

impl ImageDefaults {
    /// Reads the defaults from an image's config blob.
    pub fn of(store: &Store, rec: &ImageRecord) -> Result<ImageDefaults> {
        let config = store
            .image_config(rec)?
            .config()
            .clone()
            .unwrap_or_default();
        let mut env = Vec::new();
        for kv in config.env().iter().flatten() {
            if let Some((k, v)) = kv.split_once('=') {
                set_var(&mut env, k, v);
            }
        }
        if !env.iter().any(|(k, _)| k == "HOME") {
            env.push(("HOME".into(), "/root".into()));
        }
        Ok(ImageDefaults {
            env,
            working_dir: config.working_dir().clone().filter(|w| !w.is_empty()),
        })
    }
}

/// Sets `key` in an ordered environment, replacing an earlier value.
pub fn set_var(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}
