//! `hangar run` benchmark (root; `cargo bench -p hangar --bench run`): `hangar run --image
//! debian-bookworm -- true` as a whole process, through the daemon the CLI starts (started
//! once before the timing), beside `podman run --rm` of the same image (imported into
//! podman's storage from hangar's own blobs, offline), interleaved in one run.
//!
//! podman comes from Debian (`apt-get install -y podman`; `scripts/bench run` installs it).
//! On this machine it needs two things to run at all, both given below:
//! - a cgroup v1 "hybrid" host: crun refuses it ("cgroups in hybrid mode not supported"),
//!   so podman runs, as hangar runs crun, in a private mount namespace with the cgroup2
//!   mount at `/sys/fs/cgroup/unified` detached (`--runtime runc` works as well, but then
//!   the two sides would not run the same runtime);
//! - no `CAP_SYS_RESOURCE` (Firecracker guests): podman's default rlimits (nofile and nproc
//!   raised to 1048576 and more) fail with EPERM, so `--ulimit` gives limits within ours.
//!
//! Everything else is podman's default (its network included), as `podman run --rm I true`.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hangar_testkit::bench::{print_table, report, summarize, Measure, Stat, Target, Unit};

#[path = "../tests/common/mod.rs"]
mod common;

const RUNS: usize = 30;
const WARMUP: usize = 2;
/// The name the Debian test image gets in podman's storage.
const PODMAN_IMAGE: &str = "localhost/hangar-bench/debian-bookworm:latest";

fn main() {
    let store = hangar_testkit::shared_store();
    let image = hangar_testkit::debian_image(&store);
    assert!(
        Command::new("podman").arg("--version").output().is_ok(),
        "podman is missing: apt-get install -y podman (scripts/bench run does it)"
    );
    import_into_podman(&store, &image);

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bench.sock");
    let hangar_run = || {
        let mut cmd = common::hangar(store.root());
        cmd.env("HANGAR_SOCKET", &socket).args([
            "run",
            "--image",
            image.name.as_str(),
            "--",
            "true",
        ]);
        timed(cmd, "hangar run")
    };
    let podman = podman_run_command();
    let podman_run = || {
        let mut cmd = podman();
        cmd.args([PODMAN_IMAGE, "true"]);
        timed(cmd, "podman run")
    };
    // The first `hangar run` starts the daemon (outside the timing, like podman's first
    // run that warms its storage); both sides then alternate under the same load.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..(WARMUP + RUNS) {
        let (h, p) = (hangar_run(), podman_run());
        if i >= WARMUP {
            ours.push(h);
            theirs.push(p);
        }
    }
    let mut shutdown = common::hangar(store.root());
    shutdown.env("HANGAR_SOCKET", &socket).arg("shutdown");
    let _ = shutdown.output();

    print_table(
        &format!("`run ... true` as a whole process, {RUNS} runs each (after {WARMUP} warm-up)"),
        50,
        &[
            summarize("hangar run --image debian-bookworm -- true", ours.clone()),
            summarize("podman run --rm (same image) true", theirs.clone()),
        ],
    );
    println!();
    report(&Measure {
        measure: "hangar run --image I -- true (whole process)".into(),
        baseline: Some("podman run --rm of the same image".into()),
        unit: Unit::Ms,
        ours: Stat::of_durations(&ours),
        base: Some(Stat::of_durations(&theirs)),
        target: Target::RatioAtMost {
            p50: 0.25,
            p95: None,
        },
        note: None,
    });
}

/// Runs `cmd` to its end and times it; it must succeed.
fn timed(mut cmd: Command, what: &str) -> Duration {
    cmd.stdin(Stdio::null());
    let t0 = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let elapsed = t0.elapsed();
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// A maker of `podman run --rm` commands with the flags that make it run here (see the
/// top of this file); the image and command follow.
fn podman_run_command() -> impl Fn() -> Command {
    let hybrid = hangar_sandbox::cgroup::CgroupLayout::detect().hybrid;
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit owned by this frame.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    assert_eq!(got, 0, "getrlimit(RLIMIT_NOFILE)");
    let nofile = format!("nofile={}:{}", nofile.rlim_cur, nofile.rlim_max);
    move || {
        let mut cmd = Command::new("podman");
        // nproc: far below any host's limit and far above what `true` needs.
        cmd.args(["run", "--rm", "--ulimit", &nofile])
            .args(["--ulimit", "nproc=4096:4096"]);
        if hybrid {
            // SAFETY: the hook only makes raw syscalls (see leave_hybrid_cgroup2).
            unsafe {
                cmd.pre_exec(hangar_sandbox::runtime::leave_hybrid_cgroup2);
            }
        }
        cmd
    }
}

/// Puts the image into podman's storage as [`PODMAN_IMAGE`], unless it is there: an OCI
/// layout whose blobs are hangar's own (the store keeps them as `blobs/sha256/<hex>`),
/// pulled from with podman's `oci:` transport. No network.
fn import_into_podman(store: &hangar_store::Store, image: &hangar_store::ImageRecord) {
    let manifest_path = store.blob_path(&image.manifest);
    let manifest = std::fs::read(&manifest_path).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let config = parsed["config"]["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .expect("the manifest names its config")
        .to_string();
    let id = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Id}}", PODMAN_IMAGE])
        .output()
        .unwrap();
    if id.status.success() && String::from_utf8_lossy(&id.stdout).trim() == config {
        return;
    }
    let layout = tempfile::tempdir().unwrap();
    std::fs::write(
        layout.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest.as_str(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(layout.path().join("index.json"), index.to_string()).unwrap();
    let blobs = store.path(hangar_store::Bucket::Blobs);
    std::os::unix::fs::symlink(blobs.parent().unwrap(), layout.path().join("blobs")).unwrap();
    let source = format!("oci:{}:latest", layout.path().display());
    for args in [
        vec!["pull", "-q", source.as_str()],
        vec!["tag", config.as_str(), PODMAN_IMAGE],
    ] {
        let out = Command::new("podman").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
