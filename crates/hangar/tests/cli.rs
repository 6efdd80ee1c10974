//! The `hangar` binary as a user runs it: exit codes, streams, limits, listings.

use std::process::Output;

mod common;

fn hangar(args: &[&str]) -> Output {
    common::hangar_shared()
        .args(args)
        .output()
        .expect("run hangar")
}

/// Runs hangar: its exit code and stdout exactly, a part of its stderr (an empty
/// `stderr_has`: nothing on stderr at all).
fn check(args: &[&str], code: i32, stdout: &str, stderr_has: &str) {
    let out = hangar(args);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "hangar {args:?}\nstdout: {o}\nstderr: {e}"
    );
    assert_eq!(o, stdout, "stdout of hangar {args:?}");
    if stderr_has.is_empty() {
        assert_eq!(e, "", "stderr of hangar {args:?}");
    } else {
        assert!(
            e.contains(stderr_has),
            "stderr of hangar {args:?} lacks `{stderr_has}`: {e}"
        );
    }
}

#[test]
fn run_passes_streams_and_exit_codes_through() {
    let img = ["run", "--image", "debian-bookworm", "--"];
    let with = |rest: &[&'static str]| -> Vec<&'static str> {
        img.iter().copied().chain(rest.iter().copied()).collect()
    };
    check(
        &with(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
        3,
        "out\n",
        "err\n",
    );
    check(
        &with(&["sh", "-c", "echo $HOME $PATH"]),
        0,
        "/root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        "",
    );
    check(
        &with(&["no-such-command"]),
        127,
        "",
        "failed to run `no-such-command`",
    );
    check(&with(&["/etc/passwd"]), 126, "", "Permission denied");
    check(&with(&["sh", "-c", "kill -TERM $$"]), 143, "", "");
}

/// Regression: `hangar run` returned before the sandbox's mount was gone, so a script
/// checking right after it still saw the sandbox. The sandbox writes a marker in its root;
/// the test sees it in the sandbox's upper dir while the command runs (so it looks in the
/// right place), and nowhere once `hangar run` has returned.
#[test]
fn run_returns_after_its_sandbox_is_gone() {
    let store = hangar_testkit::shared_store();
    let marker = format!(
        "gone-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let script = format!("touch /{marker} && sleep 5");
    let mut child = common::hangar_shared()
        .args([
            "run",
            "--image",
            "debian-bookworm",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .spawn()
        .expect("run hangar");
    let uppers = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(store.path(hangar_store::Bucket::Run))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("upper").join(&marker))
            .filter(|p| p.exists())
            .collect()
    };
    let mut seen = Vec::new();
    let status = loop {
        if seen.is_empty() {
            seen = uppers();
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        seen.len(),
        1,
        "the marker was never seen in a sandbox's upper dir"
    );
    let sandbox = seen[0].parent().unwrap().parent().unwrap();
    assert!(!sandbox.exists(), "{} is still there", sandbox.display());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&sandbox.display().to_string()),
        "{} is still mounted",
        sandbox.display()
    );
}

#[test]
fn run_applies_limits_and_names_the_memory_limit() {
    check(
        &[
            "run",
            "--image",
            "debian-bookworm",
            "--memory",
            "48MiB",
            "--",
            "sh",
            "-c",
            "x=$(head -c 300000000 /dev/zero | tr '\\0' a)",
        ],
        137,
        "",
        "out of memory (memory limit 48MiB)",
    );
    check(
        &[
            "run",
            "--image",
            "debian-bookworm",
            "--cpus",
            "0.5",
            "--pids",
            "64",
            "--",
            "true",
        ],
        0,
        "",
        "",
    );
    check(
        &[
            "run",
            "--runtime",
            "runc",
            "--image",
            "debian-bookworm",
            "-e",
            "GREETING=hi",
            "-w",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo $GREETING $(pwd)",
        ],
        0,
        "hi /tmp\n",
        "",
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    check(
        &["run", "--image", "no-such-image", "--", "true"],
        125,
        "",
        "failed to find image `no-such-image`",
    );
    check(
        &[
            "run",
            "--image",
            "debian-bookworm",
            "--memory",
            "lots",
            "--",
            "true",
        ],
        2,
        "",
        "not a size",
    );
    check(
        &[
            "run",
            "--image",
            "debian-bookworm",
            "--runtime",
            "kata",
            "--",
            "true",
        ],
        2,
        "",
        "unknown OCI runtime `kata`",
    );
    check(
        &[
            "run",
            "--image",
            "debian-bookworm",
            "-e",
            "NOEQUALS",
            "--",
            "true",
        ],
        125,
        "",
        "expected KEY=VALUE",
    );
    check(
        &["image", "build", "ubuntu-noble"],
        1,
        "",
        "use debian-<suite>",
    );
    check(&["image", "rm", "../../etc"], 1, "", "invalid image name");
}

#[test]
fn image_ls_lists_as_text_and_json() {
    let out = hangar(&["image", "ls", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let img = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "debian-bookworm")
        .expect("debian-bookworm listed");
    assert!(img["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(img["size"].as_u64().unwrap() > 10 << 20);
    assert!(img["created"].as_str().unwrap().ends_with('Z'));
    let text = String::from_utf8(hangar(&["image", "ls"]).stdout).unwrap();
    assert!(
        text.starts_with("NAME") && text.contains("debian-bookworm"),
        "{text}"
    );
}

#[test]
fn run_passes_stdin_and_signals_through() {
    use std::io::{BufRead, Write};
    let cmd = |args: &[&str]| {
        let mut c = common::hangar_shared();
        c.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let image = ["run", "-i", "--image", "debian-bookworm", "--"];
    let mut child = cmd(&[&image[..], &["sh", "-c", "tr a-z A-Z; echo end"]].concat());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\nWORLD\nend\n");

    // SIGTERM to hangar reaches the command, whose own exit code comes back.
    let script = "trap 'echo got TERM; exit 7' TERM; echo ready; sleep 100 & wait";
    let mut child = cmd(&[
        "run",
        "--image",
        "debian-bookworm",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(child.wait().unwrap().code(), Some(7));
}
