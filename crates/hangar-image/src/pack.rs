//! A directory in overlay's format (an upper dir, or a layer as `unpack` wrote it) packed
//! as an OCI layer, and images derived from a base image plus one such layer. The
//! inverse of `unpack`: overlay whiteouts (0/0 character devices) become `.wh.` entries
//! and opaque directories get `.wh..wh..opq`; overlay's other bookkeeping is never packed.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use hangar_store::{Digest, ImageRecord, Store};
use oci_spec::image::{HistoryBuilder, MediaType};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use crate::build::{descriptor, spec_err, write_config_and_manifest};
use crate::error::{io_err, ImageError, Result};

/// Extended attributes a layer carries: what `pack` writes and `unpack` restores.
pub(crate) fn carried_xattr(name: &str) -> bool {
    name.starts_with("user.") || name == "security.capability"
}

/// Overlay attributes that make a directory depend on other layers in ways a tar cannot
/// say; an upper made with `redirect_dir` or `metacopy` cannot be packed.
const UNPACKABLE_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "trusted.overlay.metacopy"];

/// Packs `dir` as an uncompressed tar into `out`; returns the diff_id (the digest of the
/// tar stream). Entries come in sorted order with their owners, modes, seconds of mtime,
/// hard links and carried xattrs, so packing the same tree twice gives the same digest.
/// Sockets are skipped (they mean nothing without their process).
pub fn pack_layer(dir: &Path, out: impl Write) -> Result<Digest> {
    let mut hashing = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
    };
    write_tar(dir, &mut hashing)?;
    Ok(Digest::from_hasher(hashing.hasher))
}

fn write_tar(dir: &Path, out: impl Write) -> Result<()> {
    let mut packer = Packer {
        root: dir,
        builder: tar::Builder::new(out),
        links: HashMap::new(),
    };
    packer.walk(Path::new(""))?;
    packer
        .builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(io_err("write the layer of", dir))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Packer<'a, W: Write> {
    root: &'a Path,
    builder: tar::Builder<W>,
    /// (dev, inode) of files with several links, to the first name packed.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Packer<'_, W> {
    /// Packs the children of `rel` (relative to the root), sorted by name.
    fn walk(&mut self, rel: &Path) -> Result<()> {
        let dir = self.root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io_err("read", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_err("read", &dir))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = rel.join(&name);
            self.entry(&child)?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path) -> Result<()> {
        let path = self.root.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
        let kind = meta.file_type();
        let xattrs = xattrs_of(&path)?;
        if let Some((name, _)) = xattrs
            .iter()
            .find(|(k, _)| UNPACKABLE_XATTRS.contains(&k.as_str()))
        {
            return Err(ImageError::Pack {
                path: rel.to_path_buf(),
                reason: format!("carries `{name}`, which only overlay can follow"),
            });
        }
        let mut header = Header::new_gnu();
        header.set_uid(meta.uid().into());
        header.set_gid(meta.gid().into());
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(0);

        if kind.is_char_device() && meta.rdev() == 0 {
            let name = rel.file_name().expect("entries have names").as_bytes();
            let whiteout = rel.with_file_name(std::ffi::OsStr::from_bytes(
                &[b".wh.".as_slice(), name].concat(),
            ));
            header.set_entry_type(EntryType::Regular);
            header.set_mode(0o600);
            return self.append(&mut header, &whiteout, io::empty());
        }
        if kind.is_char_device() || kind.is_block_device() {
            return Err(ImageError::Pack {
                path: rel.to_path_buf(),
                reason: "is a device node; layers may not carry devices".into(),
            });
        }
        if kind.is_socket() {
            return Ok(());
        }
        self.pax(rel, &xattrs)?;
        if kind.is_dir() {
            header.set_entry_type(EntryType::Directory);
            self.append(&mut header, rel, io::empty())?;
            if xattrs
                .iter()
                .any(|(k, v)| k == "trusted.overlay.opaque" && v == b"y")
            {
                let mut marker = Header::new_gnu();
                marker.set_entry_type(EntryType::Regular);
                marker.set_mode(0o600);
                marker.set_size(0);
                marker.set_mtime(meta.mtime().max(0) as u64);
                self.append(&mut marker, &rel.join(".wh..wh..opq"), io::empty())?;
            }
            return self.walk(rel);
        }
        if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err("read the link", &path))?;
            header.set_entry_type(EntryType::Symlink);
            return self
                .builder
                .append_link(&mut header, rel, &target)
                .map_err(io_err("pack", &path));
        }
        if kind.is_fifo() {
            header.set_entry_type(EntryType::Fifo);
            return self.append(&mut header, rel, io::empty());
        }
        if meta.nlink() > 1 {
            let id = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&id).cloned() {
                header.set_entry_type(EntryType::Link);
                return self
                    .builder
                    .append_link(&mut header, rel, &first)
                    .map_err(io_err("pack", &path));
            }
            self.links.insert(id, rel.to_path_buf());
        }
        header.set_entry_type(EntryType::Regular);
        header.set_size(meta.len());
        let file = fs::File::open(&path).map_err(io_err("open", &path))?;
        self.append(&mut header, rel, file)
    }

    fn append(&mut self, header: &mut Header, rel: &Path, data: impl io::Read) -> Result<()> {
        self.builder
            .append_data(header, rel, data)
            .map_err(io_err("pack", self.root.join(rel)))
    }

    /// A PAX header carrying the entry's xattrs (`SCHILY.xattr.NAME`), when it has any.
    fn pax(&mut self, rel: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
        let mut records = Vec::new();
        for (name, value) in xattrs.iter().filter(|(k, _)| carried_xattr(k)) {
            records.extend(pax_record(&format!("SCHILY.xattr.{name}"), value));
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.set_mode(0o644);
        header.set_size(records.len() as u64);
        self.builder
            .append_data(&mut header, Path::new("././@PaxHeader"), &records[..])
            .map_err(io_err(
                "pack the extended attributes of",
                self.root.join(rel),
            ))
    }
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `len` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn xattrs_of(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Symlinks on some filesystems take no xattrs at all.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(io_err("list the extended attributes of", path)(e)),
    };
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if let Some(value) =
            xattr::get(path, &name).map_err(io_err("read the extended attributes of", path))?
        {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

/// A layer packed into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedLayer {
    /// The gzip blob's digest and size.
    pub blob: Digest,
    pub size: u64,
    /// The digest of the uncompressed tar (the config's diff_id).
    pub diff_id: Digest,
}

/// Packs `dir` as a gzip layer blob in the store.
pub fn pack_into_store(store: &Store, dir: &Path) -> Result<PackedLayer> {
    let mut layer = LayerWriter::new(store)?;
    write_tar(dir, &mut layer)?;
    layer.finish()
}

/// Takes an uncompressed layer (a tar stream) and stores it gzipped as a blob, hashing
/// the stream for its diff_id on the way.
pub struct LayerWriter {
    gz: HashingWriter<GzEncoder<hangar_store::BlobWriter>>,
    /// Where the blob goes, for errors.
    blobs: PathBuf,
}

impl LayerWriter {
    pub fn new(store: &Store) -> Result<LayerWriter> {
        Ok(LayerWriter {
            gz: HashingWriter {
                inner: GzEncoder::new(store.blob_writer(None)?, flate2::Compression::fast()),
                hasher: Sha256::new(),
            },
            blobs: store.path(hangar_store::Bucket::Blobs),
        })
    }

    /// Moves the blob into place.
    pub fn finish(self) -> Result<PackedLayer> {
        let diff_id = Digest::from_hasher(self.gz.hasher);
        let blob = self
            .gz
            .inner
            .finish()
            .map_err(io_err("compress a layer into", &self.blobs))?;
        let (blob, size) = blob.finish()?;
        Ok(PackedLayer {
            blob,
            size,
            diff_id,
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.gz.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.gz.flush()
    }
}

/// An image made of `base`'s layers plus `layer` on top, with `base`'s config (its
/// environment, working dir and command) and `labels` added. The manifest is stored but
/// not named; its digest is returned.
pub fn derive_image(
    store: &Store,
    base: &ImageRecord,
    layer: &PackedLayer,
    created_by: &str,
    labels: BTreeMap<String, String>,
) -> Result<Digest> {
    let base_manifest = store.manifest(&base.manifest)?;
    let mut config = store.image_config(base)?;
    let mut rootfs = config.rootfs().clone();
    let mut diff_ids = rootfs.diff_ids().clone();
    diff_ids.push(layer.diff_id.to_string());
    rootfs.set_diff_ids(diff_ids);
    config.set_rootfs(rootfs);
    let mut history = config.history().clone().unwrap_or_default();
    history.push(
        HistoryBuilder::default()
            .created_by(created_by)
            .created(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .build()
            .map_err(spec_err)?,
    );
    config.set_history(Some(history));
    let mut inner = config.config().clone().unwrap_or_default();
    let mut all_labels = inner.labels().clone().unwrap_or_default();
    all_labels.extend(
        labels
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    inner.set_labels(Some(all_labels));
    config.set_config(Some(inner));
    let mut layers = base_manifest.layers().clone();
    layers.push(descriptor(
        MediaType::ImageLayerGzip,
        &layer.blob,
        layer.size,
    )?);
    let bytes = write_config_and_manifest(store, &config, layers)?;
    Ok(store.write_blob(&bytes[..], None)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        for (key, value, expected) in [
            ("a", b"b".as_slice(), "6 a=b\n"),
            ("SCHILY.xattr.user.k", b"v", "25 SCHILY.xattr.user.k=v\n"),
            ("k", &[b'x'; 94], ""),
        ] {
            let rec = pax_record(key, value);
            let text = String::from_utf8_lossy(&rec);
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), rec.len(), "{text}");
            if !expected.is_empty() {
                assert_eq!(text, expected);
            }
        }
    }
}
