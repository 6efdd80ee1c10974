//! Import of images from files: an OCI image layout directory, or a tarball of one, or a
//! `docker save` tarball. Files are read beneath the import root only: a symlink in the
//! input cannot make hangar read a host file into a blob.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use hangar_store::{Digest, ImageName, ImageRecord, Store};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use crate::error::{ImageError, Result};
use crate::{record_image, unpack_manifest, Progress};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Imports the image at `path`. `name` overrides the name found in the input.
pub fn import(
    store: &Store,
    path: &Path,
    name: Option<&ImageName>,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let meta = fs::metadata(path).map_err(|e| import_err(path, format!("cannot read it: {e}")))?;
    let _extracted;
    let root: PathBuf = if meta.is_dir() {
        path.to_path_buf()
    } else {
        progress(&format!("extracting {}", path.display()));
        let dir = store.staging_dir()?;
        extract(path, dir.path())?;
        let root = dir.path().to_path_buf();
        _extracted = dir;
        root
    };
    let input = Input {
        root: &root,
        shown: path,
    };
    let rec = if input.exists("oci-layout") {
        import_layout(store, &input, name, progress)?
    } else if input.exists("manifest.json") {
        import_docker(store, &input, name, progress)?
    } else {
        return Err(import_err(path, "neither an OCI layout (no oci-layout file) nor a docker save archive (no manifest.json)"));
    };
    Ok(rec)
}

fn import_err(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Import {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn extract(tarball: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::open(tarball).map_err(|e| import_err(tarball, e.to_string()))?;
    let mut reader = BufReader::new(file);
    let gz = reader
        .fill_buf()
        .map_err(|e| import_err(tarball, e.to_string()))?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(stream);
    // tar's unpack refuses `..` and writes through links that leave `dest`.
    archive.set_preserve_permissions(false);
    archive
        .unpack(dest)
        .map_err(|e| import_err(tarball, format!("not a readable tar archive: {e}")))
}

/// The import's root: every file is opened beneath it.
struct Input<'a> {
    root: &'a Path,
    shown: &'a Path,
}

impl Input<'_> {
    fn open(&self, rel: &str) -> Result<fs::File> {
        let dir = fs::File::open(self.root).map_err(|e| import_err(self.shown, e.to_string()))?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .mode(Mode::empty())
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd: OwnedFd = openat2(&dir, rel, how)
            .map_err(|e| import_err(self.shown, format!("cannot open `{rel}` inside it: {e}")))?;
        Ok(fs::File::from(fd))
    }

    fn exists(&self, rel: &str) -> bool {
        self.open(rel).is_ok()
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open(rel)?
            .read_to_end(&mut data)
            .map_err(|e| import_err(self.shown, format!("cannot read `{rel}`: {e}")))?;
        Ok(data)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, rel: &str) -> Result<T> {
        serde_json::from_slice(&self.read(rel)?)
            .map_err(|e| import_err(self.shown, format!("`{rel}` is not valid: {e}")))
    }

    /// Copies a blob of the layout into the store, verifying its digest.
    fn copy_blob(&self, store: &Store, digest: &str) -> Result<Digest> {
        let d: Digest = digest
            .parse()
            .map_err(|_| import_err(self.shown, format!("unsupported digest `{digest}`")))?;
        if store.has_blob(&d) {
            return Ok(d);
        }
        let rel = format!("blobs/sha256/{}", d.hex());
        let (got, _) = store
            .write_blob(self.open(&rel)?, Some(d))
            .map_err(|e| import_err(self.shown, format!("blob `{rel}`: {e}")))?;
        Ok(got)
    }
}

fn import_layout(
    store: &Store,
    input: &Input<'_>,
    name: Option<&ImageName>,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let index: ImageIndex = input.json("index.json")?;
    let wanted_tag = name.map(|n| n.as_str().rsplit(':').next().unwrap_or("").to_string());
    let manifests = index.manifests();
    let chosen = manifests
        .iter()
        .find(|m| {
            let r = m.annotations().as_ref().and_then(|a| a.get(REF_NAME));
            wanted_tag.is_some() && r.map(String::as_str) == wanted_tag.as_deref()
        })
        .or_else(|| manifests.first())
        .ok_or_else(|| import_err(input.shown, "index.json lists no image"))?;
    let ref_name = chosen
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .cloned();
    let mut desc = chosen.clone();
    // A multi-platform index: take linux/amd64.
    for _ in 0..4 {
        if !matches!(desc.media_type(), MediaType::ImageIndex)
            && desc.media_type().to_string()
                != "application/vnd.docker.distribution.manifest.list.v2+json"
        {
            break;
        }
        let nested: ImageIndex = {
            let d = input.copy_blob(store, desc.digest().as_ref())?;
            serde_json::from_slice(&store.read_blob(&d)?)
                .map_err(|e| import_err(input.shown, e.to_string()))?
        };
        desc = nested
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.architecture().to_string() == "amd64" && p.os().to_string() == "linux"
                })
            })
            .cloned()
            .ok_or_else(|| import_err(input.shown, "the index has no linux/amd64 image"))?;
    }
    let manifest_digest = input.copy_blob(store, desc.digest().as_ref())?;
    let manifest_bytes = store.read_blob(&manifest_digest)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| import_err(input.shown, format!("bad manifest: {e}")))?;
    input.copy_blob(store, manifest.config().digest().as_ref())?;
    for (i, layer) in manifest.layers().iter().enumerate() {
        progress(&format!(
            "layer {}/{} {}",
            i + 1,
            manifest.layers().len(),
            layer.digest()
        ));
        input.copy_blob(store, layer.digest().as_ref())?;
    }
    let name = match name {
        Some(n) => n.clone(),
        None => default_name(input.shown, ref_name.as_deref())?,
    };
    progress("unpacking layers");
    unpack_manifest(store, &name, &manifest_bytes)?;
    record_image(store, &name, &manifest_bytes)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker(
    store: &Store,
    input: &Input<'_>,
    name: Option<&ImageName>,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let entries: Vec<DockerEntry> = input.json("manifest.json")?;
    let entry = entries
        .first()
        .ok_or_else(|| import_err(input.shown, "manifest.json lists no image"))?;
    let (config_digest, config_size) = store.write_blob(input.open(&entry.config)?, None)?;
    let mut layer_descs = Vec::new();
    for (i, rel) in entry.layers.iter().enumerate() {
        progress(&format!("layer {}/{} {rel}", i + 1, entry.layers.len()));
        let mut head = [0u8; 2];
        let gz = input.open(rel)?.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b];
        let (digest, size) = store.write_blob(input.open(rel)?, None)?;
        layer_descs.push(serde_json::json!({
            "mediaType": if gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
            "digest": digest.as_str(),
            "size": size,
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.as_str(), "size": config_size},
        "layers": layer_descs,
    });
    let bytes =
        serde_json::to_vec(&manifest).map_err(|e| import_err(input.shown, e.to_string()))?;
    let tag = entry
        .repo_tags
        .as_ref()
        .and_then(|t| t.first())
        .map(String::as_str);
    let name = match name {
        Some(n) => n.clone(),
        None => default_name(input.shown, tag)?,
    };
    progress("unpacking layers");
    unpack_manifest(store, &name, &bytes)?;
    record_image(store, &name, &bytes)
}

/// The input's own name if it has one, else the file name without its extensions.
fn default_name(path: &Path, found: Option<&str>) -> Result<ImageName> {
    if let Some(n) = found.and_then(|f| f.parse().ok()) {
        return Ok(n);
    }
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or("").to_string();
    stem.parse()
        .map_err(|_| import_err(path, "it carries no usable name: give one with --name"))
}
