//! Pull from and push to OCI registries with oci-client. Manifests travel as raw bytes, so
//! a pushed image keeps its digest; every blob is verified by the store as it lands.

use hangar_store::{manifest_blobs, Digest, ImageName, ImageRecord, Store};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};
use tokio::io::AsyncWriteExt;

use crate::error::{ImageError, Result};
use crate::{record_image, unpack_manifest, Progress};

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP to this reference's registry (for a local registry without TLS).
    pub insecure: bool,
}

fn client(reference: &Reference, opts: &RegistryOptions) -> Client {
    let protocol = if opts.insecure {
        ClientProtocol::HttpsExcept(vec![reference.resolve_registry().to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        ..Default::default()
    })
}

/// The registry (`host[:port]`) that `reference` names, read as the registry client
/// reads it: a reference without a registry host names the client's default one.
pub fn registry_of(reference: &str) -> Result<String> {
    Ok(parse_ref(reference)?.registry().to_string())
}

fn parse_ref(reference: &str) -> Result<Reference> {
    reference.parse().map_err(|e| ImageError::Registry {
        action: "parse reference",
        reference: reference.into(),
        reason: format!("{e}"),
    })
}

fn reg_err<'a>(
    action: &'static str,
    reference: &'a str,
) -> impl FnOnce(oci_client::errors::OciDistributionError) -> ImageError + 'a {
    move |e| ImageError::Registry {
        action,
        reference: reference.to_string(),
        reason: e.to_string(),
    }
}

/// Pulls `reference` (linux/amd64 from a multi-platform index) and names it `name`, or the
/// reference itself.
pub async fn pull(
    store: &Store,
    reference: &str,
    name: Option<&ImageName>,
    opts: &RegistryOptions,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let manifest = fetch(store, reference, opts, progress).await?;
    let name = match name {
        Some(n) => n.clone(),
        None => reference.parse()?,
    };
    let bytes = store.read_blob(&manifest)?;
    progress("unpacking layers");
    unpack_manifest(store, &name, &bytes)?;
    record_image(store, &name, &bytes)
}

/// Fetches the manifest of `reference` (linux/amd64 from a multi-platform index) and every
/// blob it names into the store, each verified, without naming an image; returns the
/// manifest's digest.
pub async fn fetch(
    store: &Store,
    reference: &str,
    opts: &RegistryOptions,
    progress: Progress<'_>,
) -> Result<Digest> {
    let mut r = parse_ref(reference)?;
    let c = client(&r, opts);
    let auth = RegistryAuth::Anonymous;
    let accepted = [
        OCI_IMAGE_MEDIA_TYPE,
        IMAGE_MANIFEST_MEDIA_TYPE,
        OCI_IMAGE_INDEX_MEDIA_TYPE,
        IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    ];
    let (mut bytes, mut digest) = c
        .pull_manifest_raw(&r, &auth, &accepted)
        .await
        .map_err(reg_err("pull the manifest of", reference))?;
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(&bytes) {
        if index.manifests().iter().any(|m| m.platform().is_some()) {
            let chosen = index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.architecture().to_string() == "amd64" && p.os().to_string() == "linux"
                    })
                })
                .ok_or_else(|| ImageError::Registry {
                    action: "pull",
                    reference: reference.into(),
                    reason: "no linux/amd64 image in its index".into(),
                })?;
            r = Reference::with_digest(
                r.registry().to_string(),
                r.repository().to_string(),
                chosen.digest().to_string(),
            );
            (bytes, digest) = c
                .pull_manifest_raw(&r, &auth, &accepted)
                .await
                .map_err(reg_err("pull the manifest of", reference))?;
        }
    }
    let manifest_digest: Digest = digest.parse()?;
    if Digest::of(&bytes) != manifest_digest {
        return Err(ImageError::Registry {
            action: "verify the manifest of",
            reference: reference.into(),
            reason: format!("content does not hash to {manifest_digest}"),
        });
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Registry {
            action: "read the manifest of",
            reference: reference.into(),
            reason: e.to_string(),
        })?;
    let wanted = manifest_blobs(&manifest)?;
    for (i, digest) in wanted.iter().enumerate() {
        if store.has_blob(digest) {
            continue;
        }
        if i > 0 {
            progress(&format!(
                "pulling layer {i}/{} {}",
                wanted.len() - 1,
                digest.short()
            ));
        }
        let tmp = store.staging_dir()?;
        let path = tmp.path().join("blob");
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(crate::error::io_err("create", &path))?;
        c.pull_blob(&r, digest.as_str(), &mut file)
            .await
            .map_err(reg_err("pull a blob of", reference))?;
        file.flush()
            .await
            .map_err(crate::error::io_err("write", &path))?;
        drop(file);
        let f = std::fs::File::open(&path).map_err(crate::error::io_err("open", &path))?;
        store.write_blob(f, Some(digest.clone()))?;
    }
    store.write_blob(&bytes[..], Some(manifest_digest.clone()))?;
    Ok(manifest_digest)
}

/// Pushes a local image to `reference`; returns the manifest digest (the same as local).
pub async fn push(
    store: &Store,
    name: &str,
    reference: &str,
    opts: &RegistryOptions,
    progress: Progress<'_>,
) -> Result<Digest> {
    let rec = store.image(name)?;
    push_manifest(store, &rec.manifest, reference, opts, progress).await?;
    Ok(rec.manifest)
}

/// Pushes a stored manifest and its blobs to `reference`.
pub async fn push_manifest(
    store: &Store,
    manifest_digest: &Digest,
    reference: &str,
    opts: &RegistryOptions,
    progress: Progress<'_>,
) -> Result<()> {
    let r = parse_ref(reference)?;
    let c = client(&r, opts);
    c.auth(
        &r,
        &RegistryAuth::Anonymous,
        oci_client::RegistryOperation::Push,
    )
    .await
    .map_err(reg_err("authenticate to", reference))?;
    let manifest_bytes = store.read_blob(manifest_digest)?;
    let manifest = store.manifest(manifest_digest)?;
    let blobs = manifest_blobs(&manifest)?;
    for (i, d) in blobs.iter().enumerate() {
        if c.blob_exists(&r, d.as_str())
            .await
            .map_err(reg_err("query", reference))?
        {
            continue;
        }
        if i > 0 {
            progress(&format!(
                "pushing layer {i}/{} {}",
                blobs.len() - 1,
                d.short()
            ));
        }
        let data = store.read_blob(d)?;
        c.push_blob(&r, data, d.as_str())
            .await
            .map_err(reg_err("push a blob to", reference))?;
    }
    let media = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_string());
    let header = media.parse().map_err(|_| ImageError::Registry {
        action: "push",
        reference: reference.into(),
        reason: format!("bad media type {media}"),
    })?;
    c.push_manifest_raw(&r, manifest_bytes, header)
        .await
        .map_err(reg_err("push the manifest to", reference))?;
    Ok(())
}
