//! Safe layer unpacking: a tar stream (plain or gzip) becomes a directory in overlay's
//! format. OCI whiteouts turn into overlay whiteouts (0/0 character devices, the opaque
//! xattr). Nothing is ever written outside the destination: entries with `..` or an
//! absolute path, links that escape, writes through symlinks, and device nodes are refused
//! with an error naming the entry. A layer that unpacks to more than its [`Budget`] is
//! refused as soon as it passes it (a few MiB of gzip can expand to many GiB).

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use hangar_store::Digest;
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::error::{io_err, ImageError, Result};

/// How large a layer may unpack: at most `ratio` times its compressed size, but never
/// less than `floor` (small layers of large files are normal) nor more than `layer`.
/// The unpacked size is that of the tar stream, which bounds what unpacking writes
/// (GNU sparse entries are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    pub layer: u64,
    pub ratio: u64,
    pub floor: u64,
}

impl Default for UnpackLimits {
    /// Image layers compress 2 to 10 times; 50 leaves room for files of zeros and
    /// logs, and refuses a 9 MiB layer that expands to 2 GiB.
    fn default() -> Self {
        UnpackLimits {
            layer: 32 << 30,
            ratio: 50,
            floor: 1 << 30,
        }
    }
}

/// What one layer may unpack to, and the layer's name for the error that refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    layer: String,
    compressed: u64,
    max: u64,
}

impl Budget {
    /// The budget of layer `layer` (its digest) stored as `compressed` bytes.
    pub fn new(limits: &UnpackLimits, layer: impl Into<String>, compressed: u64) -> Budget {
        let max = compressed
            .saturating_mul(limits.ratio)
            .max(limits.floor)
            .min(limits.layer);
        Budget {
            layer: layer.into(),
            compressed,
            max,
        }
    }

    /// The most bytes the layer may unpack to.
    pub fn max(&self) -> u64 {
        self.max
    }

    fn refused(&self) -> ImageError {
        ImageError::LayerTooLarge {
            layer: self.layer.clone(),
            compressed: self.compressed,
            max: self.max,
        }
    }
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Unpacks one layer into `dest` (an empty directory) and returns its diff_id: the digest
/// of the uncompressed tar stream. Past `budget` it stops; the caller's staging dir
/// then holds what was written so far, and goes with it.
pub fn unpack_layer(reader: impl Read, dest: &Path, budget: &Budget) -> Result<Digest> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered
        .fill_buf()
        .map_err(io_err("read layer from", dest))?;
    let plain: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(ImageError::Unpack(
            "zstd-compressed layers are not supported yet; use gzip or plain tar".into(),
        ));
    } else {
        Box::new(buffered)
    };
    let mut hashing = HashingReader {
        inner: plain,
        hasher: Sha256::new(),
        read: 0,
        max: budget.max,
    };
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let unpacked = unpack_entries(&mut hashing, dest, &mut dir_times)
        // The digest covers the whole stream, including the end-of-archive padding.
        .and_then(|()| {
            io::copy(&mut hashing, &mut io::sink())
                .map(drop)
                .map_err(io_err("read layer into", dest))
        });
    // Whatever error the reader's refusal became on the way (tar wraps it), the budget
    // is the reason.
    if hashing.read > hashing.max {
        return Err(budget.refused());
    }
    unpacked?;
    // Directory times are set last: adding children changed them.
    for (path, mtime) in dir_times.into_iter().rev() {
        let t = TimeSpec::new(mtime, 0);
        let _ = utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(Digest::from_hasher(hashing.hasher))
}

fn unpack_entries<R: Read>(
    stream: &mut R,
    dest: &Path,
    dir_times: &mut Vec<(PathBuf, i64)>,
) -> Result<()> {
    let mut archive = tar::Archive::new(stream);
    for entry in archive
        .entries()
        .map_err(|e| ImageError::Unpack(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| ImageError::Unpack(format!("bad tar stream: {e}")))?;
        if let Some(dir) = unpack_entry(&mut entry, dest)? {
            dir_times.push(dir);
        }
    }
    Ok(())
}

/// The uncompressed stream: hashed, counted, and cut off once past `max`.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    max: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read > self.max {
            return Err(io::Error::other("the layer passed its unpacked size limit"));
        }
        // Never more than one byte past the limit: that byte is how it is told.
        let room = (self.max - self.read).saturating_add(1);
        let len = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(io::Error::other("the layer passed its unpacked size limit"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn unsafe_entry(entry: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::UnsafeEntry {
        entry: entry.display().to_string(),
        reason: reason.into(),
    }
}

/// An entry's path as plain components below the layer root: `./` is dropped, anything
/// absolute or climbing is refused.
pub fn relative_path(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                return Err(unsafe_entry(raw, "climbs out of the layer with `..`"))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(raw, "has an absolute path"))
            }
        }
    }
    Ok(out)
}

/// Whether a symlink at `link` (relative to the root) pointing at `target` stays inside the
/// root when resolved lexically. Absolute targets resolve from the sandbox's root, which
/// is the layer's root, so only `..` past the top escapes.
fn symlink_escapes(link: &Path, target: &Path) -> bool {
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    if !target.is_absolute() {
        if let Some(parent) = link.parent() {
            depth.extend(parent.components().filter_map(|c| match c {
                Component::Normal(p) => Some(p),
                _ => None,
            }));
        }
    }
    for c in target.components() {
        match c {
            Component::ParentDir if depth.pop().is_none() => return true,
            Component::ParentDir => {}
            Component::Normal(p) => depth.push(p),
            _ => {}
        }
    }
    false
}

/// Creates the missing parents of `rel` as directories, refusing to pass through anything
/// that is not a real directory (a symlink planted by an earlier entry, say).
fn ensure_parents(dest: &Path, rel: &Path, entry: &Path) -> Result<()> {
    let mut cur = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(unsafe_entry(
                        entry,
                        format!(
                            "writes through the symlink `{}`",
                            cur.strip_prefix(dest).unwrap_or(&cur).display()
                        ),
                    ))
                }
                Ok(_) => {
                    return Err(unsafe_entry(
                        entry,
                        format!(
                            "has a parent `{}` that is not a directory",
                            cur.strip_prefix(dest).unwrap_or(&cur).display()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(io_err("create", &cur))?;
                }
                Err(e) => return Err(io_err("inspect", &cur)(e)),
            }
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (later entries replace earlier ones), without following it.
fn clear(path: &Path, keep_dir: bool) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => {
            if !keep_dir {
                fs::remove_dir_all(path).map_err(io_err("replace", path))?;
            }
        }
        Ok(_) => fs::remove_file(path).map_err(io_err("replace", path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", path)(e)),
    }
    Ok(())
}

/// Unpacks one entry; returns a directory whose mtime is to be set at the end.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
) -> Result<Option<(PathBuf, i64)>> {
    let raw = entry
        .path()
        .map_err(|e| ImageError::Unpack(format!("bad entry name: {e}")))?
        .into_owned();
    let rel = relative_path(&raw)?;
    let header = entry.header().clone();
    let kind = header.entry_type();
    if rel.as_os_str().is_empty() {
        // The layer root itself ("./"): nothing to create.
        return Ok(None);
    }
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ensure_parents(dest, &rel, &raw)?;
    let parent = dest.join(rel.parent().unwrap_or(Path::new("")));

    if name == OPAQUE_MARKER {
        xattr_set(&parent, "trusted.overlay.opaque", b"y")?;
        return Ok(None);
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(unsafe_entry(&raw, "is a malformed whiteout"));
        }
        let target = parent.join(hidden);
        clear(&target, false)?;
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(|e| io_err("create whiteout", &target)(e.into()))?;
        return Ok(None);
    }

    let path = dest.join(&rel);
    let mode = header
        .mode()
        .map_err(|e| ImageError::Unpack(e.to_string()))?
        & 0o7777;
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    let mtime = header.mtime().unwrap_or(0) as i64;
    let mut is_dir = false;
    match kind {
        EntryType::Directory => {
            clear(&path, true)?;
            if !path.is_dir() {
                fs::create_dir(&path).map_err(io_err("create", &path))?;
            }
            is_dir = true;
        }
        EntryType::Regular | EntryType::Continuous => {
            clear(&path, false)?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&path)
                .map_err(io_err("create", &path))?;
            io::copy(entry, &mut f).map_err(io_err("write", &path))?;
        }
        EntryType::Symlink => {
            let target = link_target(entry, &raw, "symlink")?;
            if symlink_escapes(&rel, &target) {
                return Err(unsafe_entry(
                    &raw,
                    format!(
                        "is a symlink to `{}`, which escapes the layer",
                        target.display()
                    ),
                ));
            }
            clear(&path, false)?;
            symlink(&target, &path).map_err(io_err("create symlink", &path))?;
        }
        EntryType::Link => {
            let target_raw = link_target(entry, &raw, "hard link")?;
            let refuse = |why: &str| {
                unsafe_entry(
                    &raw,
                    format!("is a hard link to `{}`{why}", target_raw.display()),
                )
            };
            let target_rel =
                relative_path(&target_raw).map_err(|_| refuse(", which escapes the layer"))?;
            // The target must be a file this layer already holds, reached without symlinks.
            ensure_parents(dest, &target_rel, &raw).map_err(|_| refuse(" through a symlink"))?;
            let target = dest.join(&target_rel);
            if !fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
                return Err(refuse(", which is not a file in this layer"));
            }
            clear(&path, false)?;
            fs::hard_link(&target, &path).map_err(io_err("create hard link", &path))?;
            return Ok(None);
        }
        EntryType::Fifo => {
            clear(&path, false)?;
            mknod(&path, SFlag::S_IFIFO, Mode::from_bits_truncate(mode), 0)
                .map_err(|e| io_err("create fifo", &path)(e.into()))?;
        }
        EntryType::Char | EntryType::Block => {
            return Err(unsafe_entry(
                &raw,
                "is a device node; layers may not carry devices",
            ));
        }
        EntryType::XGlobalHeader
        | EntryType::XHeader
        | EntryType::GNULongName
        | EntryType::GNULongLink => {
            return Ok(None);
        }
        other => {
            return Err(unsafe_entry(
                &raw,
                format!("has an unsupported type {other:?}"),
            ))
        }
    }

    fchownat(
        nix::fcntl::AT_FDCWD,
        &path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_err("set the owner of", &path)(e.into()))?;
    if kind != EntryType::Symlink {
        // After chown, which clears setuid bits.
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_err("set the mode of", &path))?;
    }
    for (key, value) in pax_xattrs(entry) {
        // Overlay's own attributes would let a layer redirect lookups into other layers.
        if crate::pack::carried_xattr(&key) {
            xattr_set_nofollow(&path, &key, &value)?;
        }
    }
    if is_dir {
        return Ok(Some((path, mtime)));
    }
    let t = TimeSpec::new(mtime, 0);
    let _ = utimensat(
        nix::fcntl::AT_FDCWD,
        &path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    );
    Ok(None)
}

/// The target of a link entry; `what` names the kind of link in the error.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, raw: &Path, what: &str) -> Result<PathBuf> {
    Ok(entry
        .link_name()
        .map_err(|e| ImageError::Unpack(e.to_string()))?
        .ok_or_else(|| unsafe_entry(raw, format!("is a {what} without a target")))?
        .into_owned())
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = HashMap::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.insert(name.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
    }
    out.into_iter().collect()
}

fn xattr_set(path: &Path, key: &str, value: &[u8]) -> Result<()> {
    set_xattr(path, key, value, false)
}

fn xattr_set_nofollow(path: &Path, key: &str, value: &[u8]) -> Result<()> {
    set_xattr(path, key, value, true)
}

fn set_xattr(path: &Path, key: &str, value: &[u8], nofollow: bool) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::Unpack("path with NUL".into()))?;
    let k = CString::new(key).map_err(|_| ImageError::Unpack("xattr name with NUL".into()))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid slice.
    let rc = unsafe {
        if nofollow {
            libc::lsetxattr(
                p.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        } else {
            libc::setxattr(
                p.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    };
    if rc < 0 {
        return Err(io_err("set an extended attribute on", path)(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_escape(link: &str, target: &str, escapes: bool) {
        assert_eq!(
            symlink_escapes(Path::new(link), Path::new(target)),
            escapes,
            "{link} -> {target}"
        );
    }

    #[test]
    fn symlink_escape_is_lexical_from_the_layer_root() {
        check_escape("bin", "usr/bin", false);
        check_escape("etc/localtime", "/usr/share/zoneinfo/UTC", false);
        check_escape("a/b/c", "../../x", false);
        check_escape("a/b/c", "../../../x", true);
        check_escape("a", "/../../etc", true);
        check_escape("a", "..", true);
    }

    fn check_path(input: &str, expected: std::result::Result<&str, &str>) {
        let got = relative_path(Path::new(input));
        match expected {
            Ok(p) => assert_eq!(got.unwrap(), Path::new(p), "{input}"),
            Err(reason) => assert!(got.unwrap_err().to_string().contains(reason), "{input}"),
        }
    }

    #[test]
    fn entry_paths() {
        check_path("./usr/bin/env", Ok("usr/bin/env"));
        check_path("usr/./lib", Ok("usr/lib"));
        check_path("./", Ok(""));
        check_path("../etc/passwd", Err("climbs out"));
        check_path("usr/../../x", Err("climbs out"));
        check_path("/etc/passwd", Err("absolute"));
    }
}
