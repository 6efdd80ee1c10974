//! Crafted layers against the unpacker: each escape attempt is refused with an error naming
//! the entry, and nothing lands outside the destination; a layer that unpacks past its
//! limit is refused, also when an import brings it. Root is needed (mknod, chown).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use hangar_image::unpack::{unpack_layer, Budget, UnpackLimits};
use sha2::{Digest as _, Sha256};

/// The default budget of a layer stored as `data`.
fn budget(data: &[u8]) -> Budget {
    Budget::new(&UnpackLimits::default(), "test", data.len() as u64)
}

/// A gzip stream (several members, as `MultiGzDecoder` reads them) of a tar holding
/// one file of `size` zero bytes: a few KiB per MiB of content.
pub fn zero_bomb(size: u64) -> Vec<u8> {
    let gzip = |data: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    };
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut out = gzip(header.as_bytes());
    let mib = gzip(&vec![0u8; 1 << 20]);
    for _ in 0..size >> 20 {
        out.extend_from_slice(&mib);
    }
    out.extend_from_slice(&gzip(&vec![0u8; (size % (1 << 20)) as usize + 1024]));
    out
}

#[test]
fn a_layer_past_its_unpacked_limit_is_refused_as_soon_as_it_passes() {
    let bomb = zero_bomb(64 << 20);
    let limits = UnpackLimits {
        layer: 1 << 30,
        ratio: 10,
        floor: 1 << 20,
    };
    let budget = Budget::new(&limits, "sha256:bomb", bomb.len() as u64);
    assert_eq!(
        budget.max(),
        1 << 20,
        "10 times {} bytes is below the floor",
        bomb.len()
    );
    let dest = tempfile::tempdir().unwrap();
    let err = unpack_layer(&bomb[..], dest.path(), &budget)
        .unwrap_err()
        .to_string();
    let compressed = hangar_spec::format_bytes(bomb.len() as u64);
    assert_eq!(
        err,
        format!("failed to unpack layer sha256:bomb: it unpacks to more than 1MiB, the limit for a layer of {compressed} compressed")
    );
    // It stopped at the limit: no more than that was written.
    let written = fs::metadata(dest.path().join("zeros")).map_or(0, |m| m.len());
    assert!(written <= 1 << 20, "{written} bytes written");

    // Within its budget the same layer unpacks.
    let roomy = Budget::new(&UnpackLimits::default(), "sha256:bomb", bomb.len() as u64);
    let dest = tempfile::tempdir().unwrap();
    unpack_layer(&bomb[..], dest.path(), &roomy).unwrap();
    assert_eq!(
        fs::metadata(dest.path().join("zeros")).unwrap().len(),
        64 << 20
    );
}

/// One tar entry, written with raw header fields so that hostile names survive.
struct E {
    name: &'static str,
    kind: tar::EntryType,
    link: &'static str,
    data: &'static [u8],
    mode: u32,
}

fn file(name: &'static str, data: &'static [u8]) -> E {
    E {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
        mode: 0o644,
    }
}
fn dir(name: &'static str) -> E {
    E {
        name,
        kind: tar::EntryType::Directory,
        link: "",
        data: b"",
        mode: 0o755,
    }
}
fn symlink(name: &'static str, link: &'static str) -> E {
    E {
        name,
        kind: tar::EntryType::Symlink,
        link,
        data: b"",
        mode: 0o777,
    }
}
fn hardlink(name: &'static str, link: &'static str) -> E {
    E {
        name,
        kind: tar::EntryType::Link,
        link,
        data: b"",
        mode: 0o644,
    }
}
fn device(name: &'static str, kind: tar::EntryType) -> E {
    E {
        name,
        kind,
        link: "",
        data: b"",
        mode: 0o666,
    }
}

fn tarball(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        {
            let raw = h.as_old_mut();
            raw.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            raw.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Unpacks into `<tmp>/layer` with a sentinel directory beside it; returns the result and
/// asserts the sentinel is untouched.
fn unpack(entries: &[E]) -> (tempfile::TempDir, Result<hangar_store::Digest, String>) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&dest).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("passwd"), "host").unwrap();
    let tar = tarball(entries);
    let res = unpack_layer(&tar[..], &dest, &budget(&tar)).map_err(|e| e.to_string());
    let listing: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        listing,
        ["passwd"],
        "something was written beside the layer"
    );
    assert_eq!(fs::read_to_string(outside.join("passwd")).unwrap(), "host");
    (tmp, res)
}

fn check_refused(entries: &[E], entry: &str, reason: &str) {
    let (_tmp, res) = unpack(entries);
    let err = res.expect_err("a crafted layer was accepted");
    assert!(
        err.contains(&format!("entry `{entry}`")),
        "error does not name `{entry}`: {err}"
    );
    assert!(err.contains(reason), "error does not say `{reason}`: {err}");
}

#[test]
fn escaping_layers_are_refused() {
    check_refused(
        &[file("../outside/passwd", b"owned")],
        "../outside/passwd",
        "climbs out",
    );
    check_refused(
        &[file("a/../../outside/passwd", b"owned")],
        "a/../../outside/passwd",
        "climbs out",
    );
    check_refused(
        &[file("/etc/passwd", b"owned")],
        "/etc/passwd",
        "absolute path",
    );
    check_refused(&[symlink("up", "../outside")], "up", "escapes the layer");
    check_refused(&[symlink("a/b", "../../../x")], "a/b", "escapes the layer");
    // An absolute symlink is fine inside a sandbox, but writing through it is not.
    check_refused(
        &[symlink("etc", "/"), file("etc/passwd", b"owned")],
        "etc/passwd",
        "through the symlink `etc`",
    );
    check_refused(&[symlink("o", "../outside")], "o", "escapes");
    check_refused(
        &[hardlink("h", "../outside/passwd")],
        "h",
        "escapes the layer",
    );
    check_refused(&[hardlink("h", "/etc/passwd")], "h", "escapes the layer");
    check_refused(&[hardlink("h", "missing")], "h", "not a file in this layer");
    check_refused(
        &[symlink("s", "/"), hardlink("h", "s/etc/passwd")],
        "h",
        "through a symlink",
    );
    check_refused(
        &[device("dev/sda", tar::EntryType::Block)],
        "dev/sda",
        "device node",
    );
    check_refused(
        &[device("dev/mem", tar::EntryType::Char)],
        "dev/mem",
        "device node",
    );
    check_refused(&[file("a/.wh..", b"")], "a/.wh..", "malformed whiteout");
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let (tmp, res) = unpack(&[
        dir("etc/"),
        file("etc/.wh.motd", b""),
        dir("usr/share/doc/"),
        file("usr/share/doc/.wh..wh..opq", b""),
    ]);
    res.unwrap();
    let layer = tmp.path().join("layer");
    let wh = fs::symlink_metadata(layer.join("etc/motd")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "etc/motd is not a 0/0 whiteout"
    );
    assert!(!layer.join("etc/.wh.motd").exists());
    let mut value = [0u8; 8];
    let path = std::ffi::CString::new(layer.join("usr/share/doc").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and a writable buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(
        &value[..n.max(0) as usize],
        b"y",
        "usr/share/doc is not opaque"
    );
}

#[test]
fn ordinary_entries_keep_content_owner_mode_and_links() {
    let entries = [
        dir("./"),
        dir("./usr/"),
        dir("./usr/bin/"),
        file("./usr/bin/tool", b"#!/bin/sh\n"),
        hardlink("./usr/bin/tool2", "./usr/bin/tool"),
        symlink("./bin", "usr/bin"),
        symlink("./etc-link", "/etc"),
    ];
    let (tmp, res) = unpack(&entries);
    let diff_id = res.unwrap();
    assert_eq!(
        diff_id.hex(),
        hex::encode(Sha256::digest(tarball(&entries))),
        "diff_id is the hash of the uncompressed stream"
    );
    let layer = tmp.path().join("layer");
    let m = fs::metadata(layer.join("usr/bin/tool")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777, m.nlink()),
        (1000, 1000, 0o644, 2)
    );
    assert_eq!(
        fs::read_link(layer.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(fs::read(layer.join("bin/tool2")).unwrap(), b"#!/bin/sh\n");

    // The same stream gzipped gives the same diff_id.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarball(&entries)).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(
        unpack_layer(&gz[..], dest.path(), &budget(&gz)).unwrap(),
        diff_id
    );
}

#[test]
fn later_entries_replace_earlier_ones_without_following_them() {
    // A symlink replaced by a file: the file must replace the link, not write through it.
    let (tmp, res) = unpack(&[symlink("x", "../outside/passwd"), file("x", b"ok")]);
    let err = res.expect_err("the escaping symlink is refused before it is replaced");
    assert!(err.contains("entry `x`"), "{err}");
    drop(tmp);
    let (tmp, res) = unpack(&[symlink("x", "y"), file("x", b"ok")]);
    res.unwrap();
    let x = tmp.path().join("layer/x");
    assert!(fs::symlink_metadata(&x).unwrap().is_file());
    assert!(!tmp.path().join("layer/y").exists());
}

/// The names in a directory (none when it does not exist).
fn children(dir: &Path) -> Vec<String> {
    fs::read_dir(dir).map_or(Vec::new(), |d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    })
}

#[test]
fn import_refuses_a_layer_that_unpacks_past_its_limit_and_leaves_nothing() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = hangar_store::Store::open(store_dir.path()).unwrap();
    // A docker save archive whose one layer is a few MiB of gzip over 2 GiB of zeros.
    let input = tempfile::tempdir().unwrap();
    let bomb = zero_bomb(2 << 30);
    fs::write(input.path().join("layer.tar.gz"), &bomb).unwrap();
    fs::write(
        input.path().join("manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["bomb:1"],"Layers":["layer.tar.gz"]}]"#,
    )
    .unwrap();
    let zeros = "0".repeat(64);
    fs::write(
        input.path().join("config.json"),
        format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{zeros}"]}}}}"#
        ),
    )
    .unwrap();
    let err = hangar_image::import(&store, input.path(), None, &|_: &str| {})
        .unwrap_err()
        .to_string();
    let blob = hangar_store::Digest::of(&bomb);
    assert_eq!(
        err,
        format!(
            "failed to unpack layer {blob}: it unpacks to more than 1GiB, the limit for a layer of {} compressed",
            hangar_spec::format_bytes(bomb.len() as u64)
        )
    );
    assert!(store.images().unwrap().is_empty(), "the image was recorded");
    assert_eq!(
        children(&store.path(hangar_store::Bucket::Tmp)),
        Vec::<String>::new()
    );
    assert_eq!(
        children(&store.path(hangar_store::Bucket::Layers)),
        Vec::<String>::new(),
        "a layer was kept"
    );
}
