//! Packing an overlay-format directory as an OCI layer and unpacking it again gives the
//! same tree: whiteouts, opaque directories, owners, modes, times, hard links, symlinks,
//! fifos, long names and carried xattrs. Root is needed (mknod, chown, trusted xattrs).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use hangar_image::pack::{pack_into_store, pack_layer};
use hangar_image::unpack::{unpack_layer, Budget, UnpackLimits};
use hangar_image::ImageError;
use nix::sys::stat::{mknod, Mode, SFlag};

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// An upper directory like one setup leaves: new, changed and deleted files, a replaced
/// directory, links of every kind.
fn upper(root: &Path) {
    write(root, "opt/tool/bin/run", b"#!/bin/sh\necho run\n", 0o755);
    write(root, "usr/bin/setuid-tool", b"\x7fELF", 0o4755);
    write(root, "home/dev/.npmrc", b"registry=x\n", 0o600);
    std::os::unix::fs::chown(root.join("home/dev/.npmrc"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(root.join("home/dev"), Some(1000), Some(1000)).unwrap();
    fs::hard_link(
        root.join("opt/tool/bin/run"),
        root.join("opt/tool/bin/run2"),
    )
    .unwrap();
    symlink("../opt/tool/bin/run", root.join("usr/bin/run")).unwrap();
    let long = format!("opt/{}/{}", "d".repeat(90), "f".repeat(80));
    write(root, &long, b"long name\n", 0o644);
    symlink(
        "/".to_string() + &"t".repeat(150),
        root.join("opt/long-link"),
    )
    .unwrap();
    // Deleted files and a directory replaced as a whole, in overlay's format.
    fs::create_dir_all(root.join("etc/apt")).unwrap();
    mknod(
        &root.join("etc/debian_version"),
        SFlag::S_IFCHR,
        Mode::empty(),
        0,
    )
    .unwrap();
    mknod(
        &root.join("etc/apt/sources.list"),
        SFlag::S_IFCHR,
        Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir_all(root.join("var/cache/apt")).unwrap();
    write(root, "var/cache/apt/fresh", b"new\n", 0o644);
    xattr::set(root.join("var/cache/apt"), "trusted.overlay.opaque", b"y").unwrap();
    mknod(
        &root.join("opt/pipe"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o640),
        0,
    )
    .unwrap();
    xattr::set(root.join("opt/tool/bin/run"), "user.origin", b"setup").unwrap();
    // Overlay's own bookkeeping is not part of a layer.
    xattr::set(root.join("opt"), "trusted.overlay.impure", b"y").unwrap();
    std::os::unix::net::UnixListener::bind(root.join("opt/daemon.sock")).unwrap();
    // Fixed times, so that the comparison sees them.
    let t = nix::sys::time::TimeSpec::new(1_700_000_000, 0);
    for rel in [
        "opt/tool/bin/run",
        "home/dev/.npmrc",
        "var/cache/apt",
        "etc",
    ] {
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &root.join(rel),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

#[test]
fn packing_then_unpacking_gives_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("upper");
    fs::create_dir(&src).unwrap();
    upper(&src);

    let mut tar = Vec::new();
    let diff_id = pack_layer(&src, &mut tar).unwrap();
    let mut again = Vec::new();
    assert_eq!(
        pack_layer(&src, &mut again).unwrap(),
        diff_id,
        "packing is deterministic"
    );
    assert_eq!(tar, again);

    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for expected in [
        "etc/.wh.debian_version",
        "etc/apt/.wh.sources.list",
        "var/cache/apt/.wh..wh..opq",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.ends_with("daemon.sock")),
        "sockets are skipped"
    );

    let dest = tmp.path().join("unpacked");
    fs::create_dir(&dest).unwrap();
    let budget = Budget::new(&UnpackLimits::default(), "packed", tar.len() as u64);
    assert_eq!(unpack_layer(&tar[..], &dest, &budget).unwrap(), diff_id);
    let expected: Vec<String> = hangar_testkit::tree(&src)
        .into_iter()
        .filter(|l| !l.starts_with("opt/daemon.sock "))
        .collect();
    assert_eq!(hangar_testkit::tree(&dest), expected);
    assert!(
        xattr::get(dest.join("opt"), "trusted.overlay.impure")
            .unwrap()
            .is_none(),
        "overlay bookkeeping is not carried"
    );
}

#[test]
fn what_a_layer_cannot_say_is_refused_with_its_path() {
    let check = |make: &dyn Fn(&Path), path: &str, reason: &str| {
        let tmp = tempfile::tempdir().unwrap();
        make(tmp.path());
        let err = pack_layer(tmp.path(), std::io::sink()).unwrap_err();
        assert!(matches!(err, ImageError::Pack { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("`{path}`")) && text.contains(reason),
            "{text}"
        );
    };
    check(
        &|root| {
            fs::create_dir(root.join("moved")).unwrap();
            xattr::set(root.join("moved"), "trusted.overlay.redirect", b"/old").unwrap();
        },
        "moved",
        "trusted.overlay.redirect",
    );
    check(
        &|root| {
            fs::create_dir(root.join("dev")).unwrap();
            mknod(
                &root.join("dev/sda"),
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(8, 0),
            )
            .unwrap();
        },
        "dev/sda",
        "device node",
    );
}

#[test]
fn a_packed_layer_lands_in_the_store_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let store = hangar_store::Store::open(tmp.path().join("store")).unwrap();
    let src = tmp.path().join("upper");
    fs::create_dir(&src).unwrap();
    write(&src, "a/b", b"hello\n", 0o644);
    let packed = pack_into_store(&store, &src).unwrap();
    assert!(store.has_blob(&packed.blob));
    let dest = tmp.path().join("unpacked");
    fs::create_dir(&dest).unwrap();
    assert_eq!(
        hangar_image::unpack_blob(&store, &packed.blob, &dest).unwrap(),
        packed.diff_id,
        "the diff_id is the uncompressed stream's"
    );
    assert_eq!(fs::read(dest.join("a/b")).unwrap(), b"hello\n");
}
