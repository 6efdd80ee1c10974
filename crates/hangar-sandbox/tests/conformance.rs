//! The OCI runtime conformance suite: every case runs against crun and runc, in real
//! sandboxes (root required), on the Debian image the testkit builds once per machine.

use std::time::Duration;

use hangar_sandbox::{
    ExecSpec, HostConfig, Resources, RuntimeKind, Sandbox, SandboxError, SandboxSpec, Stdio,
};
use hangar_testkit::{assert_no_traces, debian_layers, host, traces};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

async fn sandbox_with(rt: RuntimeKind, resources: Resources) -> (HostConfig, Sandbox) {
    let (store, layers) = tokio::task::spawn_blocking(debian_layers).await.unwrap();
    let host = host(&store);
    let mut spec = SandboxSpec::new(layers);
    spec.runtime = rt;
    spec.resources = resources;
    let sb = Sandbox::create(&host, spec).await.expect("create sandbox");
    (host, sb)
}

async fn sandbox(rt: RuntimeKind) -> (HostConfig, Sandbox) {
    sandbox_with(rt, Resources::default()).await
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["/bin/sh", "-c", script]).env("PATH", PATH)
}

async fn stdout_of(sb: &Sandbox, script: &str) -> String {
    let out = sb.output(sh(script)).await.expect("exec");
    assert!(
        out.status.success(),
        "`{script}` failed: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn commands_run_in_sequence_with_exactly_their_environment(rt: RuntimeKind) {
    let (host, sb) = sandbox(rt).await;
    // The test process's own environment must not leak into the sandbox.
    let out = sb
        .output(
            ExecSpec::new(["/usr/bin/env"])
                .env("A", "1")
                .env("B", "two words"),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "A=1\nB=two words\n");
    stdout_of(&sb, "echo kept > /root/state").await;
    assert_eq!(stdout_of(&sb, "cat /root/state").await, "kept\n");
    let id = sb.id().clone();
    sb.destroy().await.unwrap();
    assert_no_traces(&host, &id);
}

async fn sees_only_its_own_processes(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    // One process lists /proc: it must see exactly PID 1 and itself.
    let list = r#"opendir D, "/proc"; print join(" ", 1 * $$, sort { $a <=> $b } grep /^\d+$/, readdir D)"#;
    let out = sb
        .output(ExecSpec::new(["perl", "-e", list]).env("PATH", PATH))
        .await
        .unwrap();
    let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (me, seen) = pids.split_first().expect("perl prints its pid first");
    assert_eq!(seen, &[1, *me], "the sandbox sees foreign processes");
    assert_eq!(
        stdout_of(&sb, "tr '\\0' ' ' < /proc/1/cmdline")
            .await
            .trim(),
        "/dev/hangar-init"
    );
    sb.destroy().await.unwrap();
}

async fn has_only_loopback_and_it_is_up(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    assert_eq!(stdout_of(&sb, "ls /sys/class/net").await, "lo\n");
    let flags = stdout_of(&sb, "cat /sys/class/net/lo/flags").await;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down");
    // No route anywhere: connecting to an outside address fails at once.
    let out = sb
        .output(sh("exec 3<>/dev/tcp/192.0.2.1/80"))
        .await
        .unwrap();
    assert!(!out.status.success());
    sb.destroy().await.unwrap();
}

async fn sees_no_host_path(rt: RuntimeKind) {
    let marker = tempfile::NamedTempFile::new().unwrap();
    let (host, sb) = sandbox(rt).await;
    for path in [
        marker.path(),
        host.run_dir.as_path(),
        host.init_binary.as_path(),
    ] {
        let out = sb
            .output(sh(&format!("test -e '{}'", path.display())))
            .await
            .unwrap();
        assert_eq!(
            out.status.code,
            Some(1),
            "host path {} is visible in the sandbox",
            path.display()
        );
    }
    sb.destroy().await.unwrap();
}

/// Regression: `/proc/self/mountinfo` showed the overlay's lower, upper and work
/// directories by their host paths, the data dir's included.
async fn mountinfo_names_no_host_path(rt: RuntimeKind) {
    let (host, sb) = sandbox(rt).await;
    let data_dir = host
        .run_dir
        .parent()
        .expect("the run dir is in the data dir");
    let mountinfo = stdout_of(&sb, "cat /proc/self/mountinfo").await;
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a root mount");
    assert!(root.contains("lowerdir=lower/0"), "{root}");
    assert!(
        !mountinfo.contains(&*data_dir.to_string_lossy()),
        "the sandbox sees the data dir {} in\n{mountinfo}",
        data_dir.display()
    );
    sb.destroy().await.unwrap();
}

/// Regression: io_uring was allowed, a way into the kernel past the seccomp filter.
/// Each call's errno, from perl (in every Debian): EPERM is the filter's answer (without
/// it: a ring, EBADF for a ring that is not there).
async fn io_uring_is_refused(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    let calls = [
        // A zeroed `struct io_uring_params` for the kernel to fill.
        ("io_uring_setup", "425, 8, $params"),
        ("io_uring_enter", "426, -1, 1, 0, 0, 0, 0"),
        ("io_uring_register", "427, -1, 0, 0, 0"),
    ];
    for (name, args) in calls {
        let script = format!(
            "perl -e 'my $params = \"\\0\" x 120; my $r = syscall({args}); \\
             print $r < 0 ? $!+0 : \"ok\"'"
        );
        assert_eq!(
            stdout_of(&sb, &script).await,
            libc::EPERM.to_string(),
            "{name}"
        );
    }
    sb.destroy().await.unwrap();
}

async fn pid1_never_holds_an_exec_environment(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    let out = sb
        .output(sh("tr '\\0' '\\n' < /proc/1/environ").env("TOKEN", "s3cr3t-value"))
        .await
        .unwrap();
    let environ = String::from_utf8_lossy(&out.stdout);
    assert!(
        !environ.contains("s3cr3t-value"),
        "PID 1 holds an exec's variable: {environ}"
    );
    assert!(
        !environ.contains("PATH="),
        "PID 1 has an environment of its own: {environ}"
    );
    sb.destroy().await.unwrap();
}

async fn memory_limit_kills_and_is_reported(rt: RuntimeKind) {
    let (host, sb) = sandbox_with(
        rt,
        Resources {
            memory_bytes: Some(32 << 20),
            ..Resources::default()
        },
    )
    .await;
    let out = sb
        .output(sh(
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ))
        .await
        .unwrap();
    assert!(out.status.oom_killed, "{:?}", out.status);
    assert_eq!(out.status.code_or_signal(), 137);
    // A process that merely gets SIGKILL is not reported as OOM.
    let out = sb.output(sh("kill -9 $$")).await.unwrap();
    assert_eq!(out.status.signal, Some(9));
    assert!(!out.status.oom_killed);
    let id = sb.id().clone();
    sb.destroy().await.unwrap();
    assert_no_traces(&host, &id);
}

async fn pids_limit_stops_a_fork_loop(rt: RuntimeKind) {
    let (host, sb) = sandbox_with(
        rt,
        Resources {
            pids: Some(16),
            ..Resources::default()
        },
    )
    .await;
    // perl's fork fails at once (bash retries with backoff); children drop stdio so the
    // output pipe closes when the parent exits.
    let fork_loop = r#"my $n = 0; for (1..64) { my $p = fork(); if (!defined $p) { print "$n $!\n"; exit 0 } if ($p == 0) { close STDOUT; close STDERR; sleep 100; exit 0 } $n++ } print "$n none\n""#;
    let out = sb
        .output(ExecSpec::new(["perl", "-e", fork_loop]).env("PATH", PATH))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (forked, reason) = text
        .trim()
        .split_once(' ')
        .expect("perl prints a count and a reason");
    let forked: u32 = forked.parse().unwrap();
    assert!(
        forked > 0 && forked < 16,
        "{forked} forks despite a limit of 16"
    );
    assert_eq!(reason, "Resource temporarily unavailable", "{text}");
    let id = sb.id().clone();
    sb.destroy().await.unwrap();
    assert_no_traces(&host, &id);
}

async fn disk_limit_stops_every_writer_and_is_reported(rt: RuntimeKind) {
    let (host, sb) = sandbox_with(
        rt,
        Resources {
            disk_bytes: Some(16 << 20),
            ..Resources::default()
        },
    )
    .await;
    assert_eq!(sb.disk_exceeded(), None);
    // A writer in the background of its own session and one in the foreground: both
    // must die, not only the exec's process group. Bounded at 1 GiB in case the
    // watchdog is broken, so the test fails instead of filling the disk.
    let out = sb
        .output(sh("setsid sh -c 'sleep 600' & \
             for i in $(seq 256); do head -c 4194304 /dev/zero >> /root/big; sleep 0.05; done; \
             echo survived"))
        .await
        .unwrap();
    assert_eq!(out.status.signal, Some(9), "{:?}", out.status);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    let over = sb.disk_exceeded().expect("the disk limit was passed");
    assert_eq!(over.limit, 16 << 20);
    assert!(over.used > 16 << 20, "{over:?}");
    // Nothing but init is left running.
    let procs = hangar_sandbox::cgroup::CgroupLayout::detect()
        .memory_dir(sb.cgroup_path())
        .join("cgroup.procs");
    // A killed process leaves the list once the kernel has finished it.
    let mut left = String::new();
    for _ in 0..200 {
        left = std::fs::read_to_string(&procs).unwrap();
        if left.lines().count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(left.lines().count(), 1, "processes left: {left}");
    let id = sb.id().clone();
    sb.destroy().await.unwrap();
    assert_no_traces(&host, &id);
}

async fn teardown_after_failure_and_kill_and_while_running(rt: RuntimeKind) {
    let (host, sb) = sandbox(rt).await;
    let out = sb.output(sh("echo oops >&2; exit 3")).await.unwrap();
    assert_eq!(
        (out.status.code, out.stderr.as_slice()),
        (Some(3), &b"oops\n"[..])
    );
    let mut proc = sb.exec(sh("sleep 100")).await.unwrap();
    proc.signal(libc::SIGTERM);
    let status = proc.wait().await.unwrap();
    assert_eq!(status.signal, Some(libc::SIGTERM));
    // Still running at destroy: a daemonised process in its own session.
    stdout_of(
        &sb,
        "setsid sleep 1000 >/dev/null 2>&1 < /dev/null & echo started",
    )
    .await;
    let id = sb.id().clone();
    assert!(
        !traces(&host, &id).mounts.is_empty(),
        "the sandbox's root should be mounted while it runs"
    );
    sb.destroy().await.unwrap();
    assert_no_traces(&host, &id);
}

async fn dropping_a_sandbox_still_tears_it_down(rt: RuntimeKind) {
    let (host, sb) = sandbox(rt).await;
    let id = sb.id().clone();
    stdout_of(&sb, "sleep 1000 >/dev/null 2>&1 & echo bg").await;
    drop(sb);
    // Teardown on drop runs in the background: wait for it, bounded.
    for _ in 0..300 {
        if traces(&host, &id) == Default::default() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_no_traces(&host, &id);
}

/// Set in the child process that [`a_sandbox_whose_owner_was_killed_is_reaped`] starts.
const HOLD_VAR: &str = "HANGAR_TEST_HOLD_SANDBOX";
/// Set (to anything): the holder stops its sandbox and holds its [`hangar_sandbox::Upper`].
const HOLD_UPPER_VAR: &str = "HANGAR_TEST_HOLD_UPPER";

/// Not a test of its own: the owner process that the reaping cases start and kill. It
/// creates a sandbox with a process in it (or stops it, keeping its upper directory),
/// prints the id, and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started as a child process by the reaping cases"]
async fn hold_a_sandbox_until_killed() {
    let rt = match std::env::var(HOLD_VAR).as_deref() {
        Ok("runc") => RuntimeKind::Runc,
        Ok("crun") => RuntimeKind::Crun,
        _ => panic!("{HOLD_VAR} must name the runtime"),
    };
    let (_host, sb) = sandbox(rt).await;
    let id = sb.id().clone();
    let _proc = sb.exec(sh("sleep 1000")).await.unwrap();
    // Held until the kill.
    let (_sandbox, _upper) = match std::env::var_os(HOLD_UPPER_VAR) {
        Some(_) => (None, Some(sb.stop_keeping_upper().await.unwrap())),
        None => (Some(sb), None),
    };
    println!("sandbox={id}");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// Starts [`hold_a_sandbox_until_killed`], kills it once it has its sandbox; the id.
fn kill_a_holder(rt: RuntimeKind, upper: bool) -> hangar_sandbox::SandboxId {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "hold_a_sandbox_until_killed",
        "--ignored",
        "--nocapture",
    ])
    .env(HOLD_VAR, rt.name())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    if upper {
        cmd.env(HOLD_UPPER_VAR, "1");
    }
    let mut child = cmd.spawn().unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let id = out
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| l.strip_prefix("sandbox=").map(str::to_string))
        .expect("the child names its sandbox");
    // SIGKILL gives the owner no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    hangar_sandbox::SandboxId::new(id).unwrap()
}

async fn a_sandbox_whose_owner_was_killed_is_reaped(rt: RuntimeKind) {
    let (host, live) = sandbox(rt).await;
    let id = kill_a_holder(rt, false);
    // Init sees its control socket close and ends the sandbox's processes (the runtime
    // may then remove the cgroups), but the mount, the namespace and the directory, which
    // only hangar removes, stay.
    let left = traces(&host, &id);
    assert!(
        !left.mounts.is_empty() && !left.netns.is_empty() && !left.dirs.is_empty(),
        "a killed owner leaves its sandbox behind: {left:?}"
    );

    let reaped = tokio::task::spawn_blocking({
        let host = host.clone();
        move || hangar_sandbox::reap(&host)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(reaped.removed.contains(&id), "{reaped:?}");
    assert!(
        !reaped.removed.contains(live.id()),
        "a live sandbox was reaped"
    );
    assert_no_traces(&host, &id);
    // The live one, whose owner is this process, still works.
    assert_eq!(stdout_of(&live, "echo still").await, "still\n");
    live.destroy().await.unwrap();
}

/// A stopped sandbox's upper directory whose owner died (between maintenance and the
/// agent, say) is reaped like a sandbox.
async fn an_upper_whose_owner_was_killed_is_reaped(rt: RuntimeKind) {
    let (store, _) = tokio::task::spawn_blocking(debian_layers).await.unwrap();
    let host = host(&store);
    let id = kill_a_holder(rt, true);
    let left = traces(&host, &id);
    assert!(
        left.mounts.is_empty() && !left.dirs.is_empty(),
        "only its directory is left: {left:?}"
    );
    let reaped = tokio::task::spawn_blocking({
        let host = host.clone();
        move || hangar_sandbox::reap(&host)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(reaped.removed.contains(&id), "{reaped:?}");
    assert_no_traces(&host, &id);
}

async fn file_access_resolves_inside_the_root(rt: RuntimeKind) {
    let outside = tempfile::tempdir().unwrap();
    let host_target = outside.path().join("written-by-sandbox");
    let (_host, sb) = sandbox(rt).await;
    stdout_of(
        &sb,
        &format!(
            "ln -s /etc/shadow /tmp/abs; ln -s ../../../../../../../etc/shadow /tmp/up; ln -s {} /tmp/out",
            host_target.display()
        ),
    )
    .await;
    let own_shadow = stdout_of(&sb, "cat /etc/shadow").await;
    assert_eq!(
        String::from_utf8(sb.read_file("/tmp/abs").unwrap()).unwrap(),
        own_shadow
    );
    assert_eq!(
        String::from_utf8(sb.read_file("/tmp/up").unwrap()).unwrap(),
        own_shadow
    );
    // A write through a symlink naming a host path resolves inside the sandbox's root,
    // where that path's directory does not exist.
    match sb.write_file("/tmp/out", b"escaped?", 0o644) {
        Err(SandboxError::File { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}")
        }
        other => panic!("a write through /tmp/out gave {other:?}"),
    }
    assert!(
        !host_target.exists(),
        "a sandbox symlink made the host write {}",
        host_target.display()
    );
    sb.write_file("/root/hello.txt", b"hi\n", 0o600).unwrap();
    assert_eq!(
        stdout_of(&sb, "cat /root/hello.txt; stat -c %a /root/hello.txt").await,
        "hi\n600\n"
    );
    let err = sb.read_file("/no/such/file").unwrap_err();
    assert!(err.to_string().contains("/no/such/file"), "{err}");
    // A fifo would block a reader on the host until someone writes: it is refused.
    stdout_of(&sb, "mkfifo /tmp/fifo; mkdir -p /tmp/d/sub; touch /tmp/d/f").await;
    let err = sb.read_file("/tmp/fifo").unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let mut names = sb.list_dir("/tmp/d").unwrap();
    names.sort();
    assert_eq!(names, ["f", "sub"]);
    sb.destroy().await.unwrap();
}

/// The host serves a socket bound inside the sandbox: the sandbox reaches it at its own
/// 127.0.0.1, and the host's loopback does not have it.
async fn a_listener_bound_inside_is_served_by_the_host(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    let listener = sb.listen("127.0.0.1:3128".parse().unwrap()).unwrap();
    let served = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = [0u8; 5];
        conn.read_exact(&mut got).unwrap();
        conn.write_all(b"pong\n").unwrap();
        got
    });
    let out = stdout_of(
        &sb,
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/3128; printf hello >&3; head -c 5 <&3'",
    )
    .await;
    assert_eq!(out, "pong\n");
    assert_eq!(&served.join().unwrap(), b"hello");
    sb.destroy().await.unwrap();
}

async fn spawn_failures_name_the_step(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    let err = sb
        .exec(ExecSpec::new(["definitely-not-a-command"]).env("PATH", PATH))
        .await
        .unwrap_err();
    match &err {
        SandboxError::Spawn { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{err}")
        }
        other => panic!("unexpected {other}"),
    }
    let mut spec = sh("true");
    spec.cwd = "/nonexistent".into();
    let err = sb.exec(spec).await.unwrap_err().to_string();
    assert!(err.contains("change directory"), "{err}");
    sb.destroy().await.unwrap();
}

async fn privileged_operations_are_refused(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    for (script, what) in [
        ("unshare -n true", "a new network namespace"),
        ("unshare -U true", "a new user namespace"),
        ("mount -t tmpfs none /mnt", "a mount"),
        ("echo 1 > /proc/sys/kernel/sysrq", "a write to /proc/sys"),
        (
            "ip link add x type dummy 2>/dev/null || exit 1",
            "a new network link",
        ),
    ] {
        let out = sb.output(sh(script)).await.unwrap();
        assert!(!out.status.success(), "the sandbox could make {what}");
    }
    assert_eq!(
        stdout_of(&sb, "grep NoNewPrivs /proc/self/status")
            .await
            .split_whitespace()
            .last(),
        Some("1")
    );
    sb.destroy().await.unwrap();
}

async fn stdin_and_concurrent_execs(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    let mut spec = ExecSpec::new(["/usr/bin/tr", "a-z", "A-Z"]);
    spec.stdin = Stdio::Piped;
    spec.stdout = Stdio::Piped;
    let mut proc = sb.exec(spec).await.unwrap();
    let mut input = proc.stdin.take().unwrap();
    input.write_all(b"hello sandbox\n").await.unwrap();
    drop(input);
    let mut out = String::new();
    proc.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert!(proc.wait().await.unwrap().success());
    assert_eq!(out, "HELLO SANDBOX\n");
    let (a, b) = tokio::join!(sb.output(sh("sleep 0.2; echo a")), sb.output(sh("echo b")));
    assert_eq!(
        (a.unwrap().stdout, b.unwrap().stdout),
        (b"a\n".to_vec(), b"b\n".to_vec())
    );
    sb.destroy().await.unwrap();
}

/// What a sandbox wrote, kept by a rename, serves as the top lower of the next one:
/// files and deletions survive, processes do not.
async fn kept_upper_becomes_a_lower_of_the_next_sandbox(rt: RuntimeKind) {
    let (host, sb) = sandbox(rt).await;
    stdout_of(
        &sb,
        "echo kept > /opt/kept && rm /etc/debian_version && \
         (setsid sleep 1000 </dev/null >/dev/null 2>&1 &)",
    )
    .await;
    let id = sb.id().clone();
    let dest = host
        .run_dir
        .parent()
        .unwrap()
        .join("tmp")
        .join(format!("kept-{id}"));
    sb.destroy_keeping_upper(dest.clone()).await.unwrap();
    assert_no_traces(&host, &id);
    hangar_sandbox::make_durable(&dest).unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("opt/kept")).unwrap(),
        "kept\n"
    );

    let (store, layers) = tokio::task::spawn_blocking(debian_layers).await.unwrap();
    let mut spec = SandboxSpec::new(std::iter::once(dest.clone()).chain(layers).collect());
    spec.runtime = rt;
    let next = Sandbox::create(&hangar_testkit::host(&store), spec)
        .await
        .unwrap();
    assert_eq!(
        stdout_of(
            &next,
            "cat /opt/kept; test -e /etc/debian_version || echo deleted; \
             cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -c 'sleep 100[0]' || true"
        )
        .await,
        "kept\ndeleted\n0\n"
    );
    next.destroy().await.unwrap();
    std::fs::remove_dir_all(&dest).unwrap();
}
/// A stopped sandbox's upper directory, taken over by the next sandbox: its files go on;
/// its processes, its /dev/shm and its System V IPC do not; nothing else of it remains.
async fn a_stopped_upper_becomes_the_next_sandboxs_upper(rt: RuntimeKind) {
    let (host, sb) = sandbox(rt).await;
    stdout_of(
        &sb,
        "echo kept > /opt/kept && rm /etc/debian_version && echo shm > /dev/shm/f && \
         ipcmk -M 4096 >/dev/null && (setsid sleep 1000 </dev/null >/dev/null 2>&1 &)",
    )
    .await;
    let id = sb.id().clone();
    let upper = sb.stop_keeping_upper().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(upper.path().join("opt/kept")).unwrap(),
        "kept\n"
    );
    let left = traces(&host, &id);
    assert!(
        left.mounts.is_empty()
            && left.netns.is_empty()
            && left.cgroups.is_empty()
            && left.processes.is_empty(),
        "only the directory stays: {left:?}"
    );

    let (_, layers) = tokio::task::spawn_blocking(debian_layers).await.unwrap();
    let mut spec = SandboxSpec::new(layers);
    spec.runtime = rt;
    spec.upper = Some(upper);
    let next = Sandbox::create(&host, spec).await.unwrap();
    assert_no_traces(&host, &id);
    assert_eq!(
        stdout_of(
            &next,
            "cat /opt/kept; test -e /etc/debian_version || echo deleted; ls -A /dev/shm; \
             ipcs -m | grep -c '^0x' || true; \
             cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -c 'sleep 100[0]' || true"
        )
        .await,
        "kept\ndeleted\n0\n0\n"
    );
    stdout_of(&next, "echo more >> /opt/kept").await;
    let next_id = next.id().clone();
    let upper = next.stop_keeping_upper().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(upper.path().join("opt/kept")).unwrap(),
        "kept\nmore\n"
    );
    drop(upper);
    assert_no_traces(&host, &next_id);
}

/// PID 1 is not dumpable: root in the sandbox, with init's own capabilities, can neither
/// trace it nor open its memory or its fds (the control socket).
async fn pid1_cannot_be_traced_or_read(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    assert_eq!(
        stdout_of(
            &sb,
            "readlink /proc/1/fd/3 2>/dev/null || echo fd-refused; \
             (exec 9</proc/1/mem) 2>/dev/null || echo mem-refused; \
             python3 -c 'import ctypes; print(ctypes.CDLL(None).ptrace(16, 1, 0, 0))'"
        )
        .await,
        "fd-refused\nmem-refused\n-1\n"
    );
    sb.destroy().await.unwrap();
}

async fn directories_are_created_inside_the_root(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    stdout_of(&sb, "ln -s / /up && ln -s /etc/../../.. /deep").await;
    sb.create_dir_all("/.hangar/run/agent/home").unwrap();
    // Symlinks resolve inside the root: these land in the sandbox's own /tmp.
    sb.create_dir_all("/up/tmp/made-through-a-link").unwrap();
    sb.create_dir_all("/deep/tmp/made-through-dots").unwrap();
    assert_eq!(
        stdout_of(
            &sb,
            "ls -d /.hangar/run/agent/home /tmp/made-through-a-link /tmp/made-through-dots"
        )
        .await,
        "/.hangar/run/agent/home\n/tmp/made-through-a-link\n/tmp/made-through-dots\n"
    );
    assert!(!std::path::Path::new("/tmp/made-through-dots").exists());
    sb.create_dir_all("/.hangar/run/agent/home").unwrap();
    sb.destroy().await.unwrap();
}

async fn a_read_only_directory_cannot_be_written_moved_or_unmounted(rt: RuntimeKind) {
    let (_host, sb) = sandbox(rt).await;
    stdout_of(
        &sb,
        "mkdir -p /workspace/r && echo a > /workspace/r/f && ln -s /workspace /ws",
    )
    .await;
    let err = sb.read_only("/ws").unwrap_err().to_string();
    assert!(err.contains("no symlinks"), "{err}");
    let ro = sb.read_only("/workspace").unwrap();
    for attempt in [
        "echo b > /workspace/r/f",
        "touch /workspace/r/new",
        "mv /workspace /moved",
        "umount -l /workspace",
        "mount -o remount,rw /workspace",
    ] {
        let out = sb.output(sh(attempt)).await.unwrap();
        assert!(!out.status.success(), "`{attempt}` succeeded");
    }
    assert_eq!(stdout_of(&sb, "cat /workspace/r/f").await, "a\n");
    // Writable elsewhere, and again once undone.
    stdout_of(&sb, "touch /tmp/x").await;
    ro.undo().unwrap();
    stdout_of(&sb, "echo c > /workspace/r/f").await;
    assert_eq!(stdout_of(&sb, "cat /workspace/r/f").await, "c\n");
    sb.destroy().await.unwrap();
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod crun {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(hangar_sandbox::RuntimeKind::Crun).await })*
        }
        mod runc {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(hangar_sandbox::RuntimeKind::Runc).await })*
        }
    };
}

conformance!(
    a_sandbox_whose_owner_was_killed_is_reaped,
    an_upper_whose_owner_was_killed_is_reaped,
    directories_are_created_inside_the_root,
    a_read_only_directory_cannot_be_written_moved_or_unmounted,
    a_listener_bound_inside_is_served_by_the_host,
    commands_run_in_sequence_with_exactly_their_environment,
    sees_only_its_own_processes,
    has_only_loopback_and_it_is_up,
    sees_no_host_path,
    mountinfo_names_no_host_path,
    io_uring_is_refused,
    pid1_never_holds_an_exec_environment,
    memory_limit_kills_and_is_reported,
    pids_limit_stops_a_fork_loop,
    disk_limit_stops_every_writer_and_is_reported,
    teardown_after_failure_and_kill_and_while_running,
    dropping_a_sandbox_still_tears_it_down,
    file_access_resolves_inside_the_root,
    spawn_failures_name_the_step,
    privileged_operations_are_refused,
    stdin_and_concurrent_execs,
    kept_upper_becomes_a_lower_of_the_next_sandbox,
    a_stopped_upper_becomes_the_next_sandboxs_upper,
    pid1_cannot_be_traced_or_read,
);
