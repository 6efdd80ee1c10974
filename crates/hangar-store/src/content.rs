//! The content store: blobs by sha256 digest (verified before they are renamed into
//! place; a mismatch stores nothing), unpacked image layers as directories keyed by their
//! uncompressed digest, and named image records that point at a manifest. It knows OCI
//! manifests only to find what an image references.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{io_err, Bucket, LeaseKind, Result, Store, StoreError};

/// A sha256 content digest, `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as listings show them.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl FromStr for Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Digest> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| StoreError::InvalidDigest(s.into()))?;
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Digest(s.to_string()))
        } else {
            Err(StoreError::InvalidDigest(s.into()))
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A local image name: `debian-bookworm`, `localhost:5000/tools:1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageName(String);

impl ImageName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The record's file name: the name with '/' and ':' escaped.
    fn file_name(&self) -> String {
        let mut out = String::new();
        for c in self.0.chars() {
            match c {
                '/' => out.push_str("%2F"),
                ':' => out.push_str("%3A"),
                '%' => out.push_str("%25"),
                c => out.push(c),
            }
        }
        out + ".json"
    }
}

impl FromStr for ImageName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<ImageName> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && !s.starts_with(['.', '/', '-'])
            && !s
                .split('/')
                .any(|part| part == ".." || part == "." || part.is_empty())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
        if ok {
            Ok(ImageName(s.to_string()))
        } else {
            Err(StoreError::InvalidImageName(s.into()))
        }
    }
}

impl TryFrom<String> for ImageName {
    type Error = StoreError;
    fn try_from(s: String) -> Result<ImageName> {
        s.parse()
    }
}

impl From<ImageName> for String {
    fn from(n: ImageName) -> String {
        n.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A named image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: ImageName,
    pub manifest: Digest,
    /// Epoch milliseconds.
    pub created_ms: i64,
    /// Sum of the layer blobs' sizes, as the manifest states them.
    pub size: u64,
}

impl ImageRecord {
    pub fn created(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.created_ms).unwrap_or_default()
    }
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: usize,
    pub layers: usize,
    pub bytes: u64,
}

impl Store {
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.path(Bucket::Blobs).join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// A writer that hashes as it goes and lands in the store on [`BlobWriter::finish`].
    pub fn blob_writer(&self, expected: Option<Digest>) -> Result<BlobWriter> {
        let tmp_dir = self.path(Bucket::Tmp);
        let file = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(io_err("create a file in", &tmp_dir))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: io::BufWriter::new(file),
            hasher: Sha256::new(),
            size: 0,
            expected,
        })
    }

    /// Copies a reader into the store; a digest mismatch stores nothing.
    pub fn write_blob(
        &self,
        mut reader: impl Read,
        expected: Option<Digest>,
    ) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer(expected)?;
        io::copy(&mut reader, &mut w).map_err(io_err("write a blob to", self.path(Bucket::Tmp)))?;
        w.finish()
    }

    pub fn open_blob(&self, d: &Digest) -> Result<fs::File> {
        fs::File::open(self.blob_path(d)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound(d.clone())
            } else {
                io_err("open", self.blob_path(d))(e)
            }
        })
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut data)
            .map_err(io_err("read", self.blob_path(d)))?;
        Ok(data)
    }

    pub fn manifest(&self, d: &Digest) -> Result<ImageManifest> {
        let bytes = self.read_blob(d)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: "manifest",
            digest: d.clone(),
            reason: e.to_string(),
        })
    }

    pub fn config(&self, d: &Digest) -> Result<ImageConfiguration> {
        let bytes = self.read_blob(d)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            what: "image config",
            digest: d.clone(),
            reason: e.to_string(),
        })
    }

    /// The directory of an unpacked layer, keyed by its uncompressed digest.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.path(Bucket::Layers).join(diff_id.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// An empty directory on the store's filesystem, to unpack into before committing.
    pub fn staging_dir(&self) -> Result<tempfile::TempDir> {
        let tmp = self.path(Bucket::Tmp);
        tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp)
            .map_err(io_err("create a directory in", &tmp))
    }

    /// Moves a fully unpacked staging directory into place. If another writer got there
    /// first, theirs is kept (same digest, same content) and ours is dropped.
    pub fn commit_layer(&self, staging: tempfile::TempDir, diff_id: &Digest) -> Result<PathBuf> {
        let dest = self.layer_dir(diff_id);
        let src = staging.keep();
        match fs::rename(&src, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&src);
                Ok(dest)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&src);
                Err(io_err("move a layer into", &dest)(e))
            }
        }
    }

    fn image_path(&self, name: &ImageName) -> PathBuf {
        self.path(Bucket::Images).join(name.file_name())
    }

    /// Records (or replaces) a named image; written atomically.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        let path = self.image_path(&rec.name);
        let tmp_dir = self.path(Bucket::Tmp);
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(io_err("create a file in", &tmp_dir))?;
        serde_json::to_writer_pretty(&mut tmp, rec)
            .map_err(|e| io_err("write", &path)(e.into()))?;
        tmp.persist(&path)
            .map_err(|e| io_err("write", &path)(e.error))?;
        Ok(())
    }

    pub fn image(&self, name: &str) -> Result<ImageRecord> {
        let parsed: ImageName = name.parse()?;
        let path = self.image_path(&parsed);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::ImageNotFound(name.to_string())
            } else {
                io_err("read", &path)(e)
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| io_err("parse", &path)(io::Error::other(e)))
    }

    /// Every image, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.path(Bucket::Images);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let path = entry.map_err(io_err("list", &dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path).map_err(io_err("read", &path))?;
                let rec: ImageRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| io_err("parse", &path)(io::Error::other(e)))?;
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Forgets a named image and removes the blobs and layers nothing else uses.
    pub fn remove_image(&self, name: &str) -> Result<GcReport> {
        let rec = self.image(name)?;
        let path = self.image_path(&rec.name);
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        self.gc()
    }

    /// The config of a named image.
    pub fn image_config(&self, rec: &ImageRecord) -> Result<ImageConfiguration> {
        self.config(&config_digest(&self.manifest(&rec.manifest)?)?)
    }

    /// The blobs and layer dirs an image references.
    pub fn references(&self, rec: &ImageRecord) -> Result<(Vec<Digest>, Vec<Digest>)> {
        let manifest = self.manifest(&rec.manifest)?;
        let mut blobs = vec![rec.manifest.clone()];
        blobs.extend(manifest_blobs(&manifest)?);
        let layers = self
            .config(&config_digest(&manifest)?)?
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse())
            .collect::<Result<Vec<Digest>>>()?;
        Ok((blobs, layers))
    }

    /// Removes blobs and layers that no image references. Layers a running sandbox or a
    /// kept attempt layer leases ([`LeaseKind::Layers`]) are kept.
    pub fn gc(&self) -> Result<GcReport> {
        let mut keep_blobs = HashSet::new();
        let mut keep_layers = HashSet::new();
        for rec in self.images()? {
            let (blobs, layers) = self.references(&rec)?;
            keep_blobs.extend(blobs.into_iter().map(|d| d.hex().to_string()));
            keep_layers.extend(layers.into_iter().map(|d| d.hex().to_string()));
        }
        keep_layers.extend(self.leased(LeaseKind::Layers));
        let mut report = GcReport::default();
        let blob_dir = self.path(Bucket::Blobs);
        for entry in fs::read_dir(&blob_dir)
            .map_err(io_err("list", &blob_dir))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep_blobs.contains(&name) {
                report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(io_err("remove", entry.path()))?;
                report.blobs += 1;
            }
        }
        let layer_dir = self.path(Bucket::Layers);
        for entry in fs::read_dir(&layer_dir)
            .map_err(io_err("list", &layer_dir))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep_layers.contains(&name) {
                fs::remove_dir_all(entry.path()).map_err(io_err("remove", entry.path()))?;
                report.layers += 1;
            }
        }
        Ok(report)
    }
}

/// The digest of a manifest's config blob.
pub fn config_digest(manifest: &ImageManifest) -> Result<Digest> {
    manifest.config().digest().to_string().parse()
}

/// The blobs a manifest names: its config first, then its layers in order.
pub fn manifest_blobs(manifest: &ImageManifest) -> Result<Vec<Digest>> {
    let mut out = vec![config_digest(manifest)?];
    for layer in manifest.layers() {
        out.push(layer.digest().to_string().parse()?);
    }
    Ok(out)
}

/// A blob being written; see [`Store::blob_writer`].
pub struct BlobWriter {
    store: Store,
    file: io::BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    size: u64,
    expected: Option<Digest>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Verifies the digest and moves the blob into place.
    pub fn finish(self) -> Result<(Digest, u64)> {
        let actual = Digest::from_hasher(self.hasher);
        if let Some(expected) = self.expected {
            if expected != actual {
                return Err(StoreError::DigestMismatch { expected, actual });
            }
        }
        let dest = self.store.blob_path(&actual);
        let file = self
            .file
            .into_inner()
            .map_err(|e| io_err("write", &dest)(e.into_error()))?;
        file.persist(&dest)
            .map_err(|e| io_err("write", &dest)(e.error))?;
        Ok((actual, self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn blobs_are_verified_on_write() {
        let (_d, store) = store();
        let good = Digest::of(b"hello");
        let (d, n) = store.write_blob(&b"hello"[..], Some(good.clone())).unwrap();
        assert_eq!((d.clone(), n), (good, 5));
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");

        let err = store
            .write_blob(&b"tampered"[..], Some(Digest::of(b"original")))
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(
            !store.has_blob(&Digest::of(b"tampered")),
            "a mismatched blob must not be stored"
        );
        assert_eq!(
            fs::read_dir(store.path(Bucket::Tmp)).unwrap().count(),
            0,
            "staging is cleaned up"
        );
    }

    fn check_digest(input: &str, ok: bool) {
        assert_eq!(input.parse::<Digest>().is_ok(), ok, "{input}");
    }

    #[test]
    fn digest_parsing() {
        check_digest(&format!("sha256:{}", "a".repeat(64)), true);
        check_digest(&format!("sha256:{}", "A".repeat(64)), false);
        check_digest(&format!("sha512:{}", "a".repeat(64)), false);
        check_digest("sha256:abc", false);
        check_digest(&format!("sha256:../{}", "a".repeat(61)), false);
    }

    fn check_name(input: &str, ok: bool) {
        assert_eq!(input.parse::<ImageName>().is_ok(), ok, "{input}");
    }

    #[test]
    fn image_names() {
        check_name("debian-bookworm", true);
        check_name("localhost:5000/tools:1", true);
        check_name("reg.example/a/b@sha256:abc", true);
        check_name("../etc/passwd", false);
        check_name("a/../b", false);
        check_name("a//b", false);
        check_name("", false);
        check_name("with space", false);
    }

    #[test]
    fn image_records_round_trip_and_list_sorted() {
        let (_d, store) = store();
        for name in ["zeta", "localhost:5000/a:1"] {
            store
                .put_image(&ImageRecord {
                    name: name.parse().unwrap(),
                    manifest: Digest::of(name.as_bytes()),
                    created_ms: 1,
                    size: 2,
                })
                .unwrap();
        }
        let names: Vec<String> = store
            .images()
            .unwrap()
            .into_iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(names, ["localhost:5000/a:1", "zeta"]);
        assert_eq!(store.image("zeta").unwrap().manifest, Digest::of(b"zeta"));
        assert!(matches!(
            store.image("nope"),
            Err(StoreError::ImageNotFound(_))
        ));
    }
}
