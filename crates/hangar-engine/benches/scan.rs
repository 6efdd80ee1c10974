//! Leak scan benchmark (root; `cargo bench -p hangar-engine --bench scan`): the scan of a
//! tree for a secret in all of its forms (names, extended attributes, contents, zlib
//! streams and git packs inflated) beside `grep -rF` of the literal value in the same
//! tree's contents, the least a scan can do, interleaved in one run. The tree is the
//! Debian image's layers (what a setup that installs packages leaves, in size and kind)
//! plus a clone of this repository, whose pack the scan inflates and grep reads as is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hangar_secrets::{NamedSecret, Redactor, ScanMode, Secret};
use hangar_testkit::bench::{print_table, summarize};

const ITERATIONS: usize = 5;

fn secrets(n: usize) -> Vec<NamedSecret> {
    (0..n)
        .map(|i| NamedSecret {
            name: format!("S{i}"),
            value: Secret::new(format!("bench-value-{i}-q8Zr1vXk").into_bytes()).unwrap(),
        })
        .collect()
}

fn grep(roots: &[PathBuf], value: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new("grep")
        .args(["-rFlq", "--no-messages", value])
        .args(roots)
        .output()
        .expect("run grep");
    // 1: nothing found, which is what a clean tree gives.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    t.elapsed()
}

fn scan(roots: &[PathBuf], redactor: &Redactor) -> Duration {
    let t = Instant::now();
    for root in roots {
        let leaks = hangar_secrets::scan(root, redactor, ScanMode::Report).expect("scan");
        assert!(leaks.is_empty(), "{leaks:?}");
    }
    t.elapsed()
}

fn main() {
    let (_store, mut roots) = hangar_testkit::debian_layers();
    let clone = tempfile::tempdir().unwrap();
    let repo = clone.path().join("hangar");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("git")
        .args(["clone", "-q", "--no-hardlinks"])
        .arg(&source)
        .arg(&repo)
        .status()
        .expect("run git clone");
    assert!(status.success());
    roots.push(clone.path().to_path_buf());
    let one = Redactor::new(&secrets(1));
    let ten = Redactor::new(&secrets(10));
    let value = secrets(1)[0].value.expose_str().to_string();
    let (mut g, mut s1, mut s10) = (Vec::new(), Vec::new(), Vec::new());
    // One warm-up round, so that every row reads from the page cache.
    for i in 0..=ITERATIONS {
        let times = (grep(&roots, &value), scan(&roots, &one), scan(&roots, &ten));
        if i > 0 {
            g.push(times.0);
            s1.push(times.1);
            s10.push(times.2);
        }
    }
    print_table(
        "leak scan of the Debian image's layers and a git clone",
        44,
        &[
            summarize("grep -rF of the literal value (baseline)", g),
            summarize("hangar scan, 1 secret, every form", s1),
            summarize("hangar scan, 10 secrets, every form", s10),
        ],
    );
}
