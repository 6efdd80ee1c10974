//! The daemon as its users meet it: killed mid-task and started again (nothing left
//! running or mounted, the task failed with the reason, its logs kept), tasks queueing
//! for a slot, logs followed live, and 50 tasks at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

/// A daemon of its own (its own socket, over the shared data dir), stopped on drop.
struct Daemon {
    socket: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let mut d = Daemon {
            socket,
            child: None,
            _dir: dir,
        };
        d.restart(extra);
        d
    }

    /// Starts the daemon; returns once it listens, which it does after recovering.
    fn restart(&mut self, extra: &[&str]) {
        // A killed daemon's socket file stays behind.
        let _ = std::fs::remove_file(&self.socket);
        let child = self
            .command(Path::new("/"))
            .arg("serve")
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.log()).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while !self.socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> PathBuf {
        self.socket.with_extension("log")
    }

    /// The address of its TCP listener, as it says on start.
    fn tcp_addr(&self) -> String {
        common::tcp_listener(&std::fs::read_to_string(self.log()).unwrap())
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn command(&self, dir: &Path) -> Command {
        let mut cmd = common::hangar_shared();
        cmd.current_dir(dir).env("HANGAR_SOCKET", &self.socket);
        cmd
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(dir).args(args).output().unwrap()
    }

    /// Runs a command that must exit with `code`; its stdout.
    fn ok(&self, dir: &Path, args: &[&str], code: i32) -> String {
        let out = self.run(dir, args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "hangar {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, dir: &Path, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(dir, args, 0)).expect("JSON")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.run(Path::new("/"), &["shutdown"]);
            if let Some(mut c) = self.child.take() {
                let _ = c.wait();
            }
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hangar_spec::TaskId::random())
}

/// Waits (bounded) until `hangar logs TASK` shows `line`.
fn wait_for_line(d: &Daemon, dir: &Path, task: &str, line: &str) {
    let started = Instant::now();
    loop {
        if d.ok(dir, &["logs", task], 0).contains(line) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "task {task} never logged `{line}`"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sandbox whose upper directory holds `/tmp/<marker>`.
fn sandbox_marked(marker: &str) -> hangar_sandbox::SandboxId {
    let run = hangar_testkit::shared_store().path(hangar_store::Bucket::Run);
    for entry in std::fs::read_dir(&run).unwrap().flatten() {
        if entry.path().join("upper/tmp").join(marker).exists() {
            let name = entry.file_name().to_string_lossy().into_owned();
            return hangar_sandbox::SandboxId::new(name).unwrap();
        }
    }
    panic!("no sandbox in {} holds /tmp/{marker}", run.display());
}

/// Kills the daemon while `task` is in the phase that wrote `marker`, starts it again,
/// and checks what is left.
fn kill_and_recover(d: &mut Daemon, dir: &Path, task: &str, logged: &str, marker: &str) {
    wait_for_line(d, dir, task, logged);
    let id = sandbox_marked(marker);
    let host = hangar_testkit::host(&hangar_testkit::shared_store());
    d.kill();
    let left = hangar_testkit::traces(&host, &id);
    assert!(
        !left.mounts.is_empty() && !left.netns.is_empty() && !left.dirs.is_empty(),
        "a killed daemon leaves its sandbox mounted: {left:?}"
    );

    d.restart(&[]);
    hangar_testkit::assert_no_traces(&host, &id);
    d.ok(dir, &["status", task], 3);
    let shown = d.json(dir, &["show", task, "--json"]);
    assert_eq!(shown["status"], "error");
    let error = shown["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("hangar stopped while this attempt ran; its sandbox was removed"),
        "{error}"
    );
    assert!(
        d.ok(dir, &["logs", task], 0).contains(logged),
        "the logs so far are kept"
    );
}

#[test]
fn a_daemon_killed_during_setup_or_the_agent_leaves_nothing_after_its_restart() {
    let mut d = Daemon::start(&[]);
    let u = unique("crash");
    let repo = hangar_testkit::repo_with(&[("README", b"hi\n")]);
    let r = repo.path();
    let setup_env = format!("{u}-setup");
    let setup = format!("echo setup-{u}; touch /tmp/{u}-setup; sleep 1000");
    d.ok(
        r,
        &[
            "env",
            "create",
            &setup_env,
            "--repo",
            ".",
            "--image",
            "debian-bookworm",
            "--setup",
            &setup,
            "--agent-script",
            "true",
        ],
        0,
    );
    let agent_env = format!("{u}-agent");
    let agent = format!("echo agent-{u}; touch /tmp/{u}-agent; sleep 1000");
    d.ok(
        r,
        &[
            "env",
            "create",
            &agent_env,
            "--repo",
            ".",
            "--image",
            "debian-bookworm",
            "--agent-script",
            &agent,
        ],
        0,
    );

    let task = d.ok(r, &["exec", "--detach", "--env", &setup_env, "go"], 0);
    kill_and_recover(
        &mut d,
        r,
        task.trim(),
        &format!("setup-{u}"),
        &format!("{u}-setup"),
    );

    let task = d.ok(r, &["exec", "--detach", "--env", &agent_env, "go"], 0);
    kill_and_recover(
        &mut d,
        r,
        task.trim(),
        &format!("agent-{u}"),
        &format!("{u}-agent"),
    );
}

#[test]
fn tasks_queue_for_a_slot_and_logs_follow_live() {
    let d = Daemon::start(&["--max-running", "1", "--max-attempts", "1"]);
    let u = unique("queue");
    let repo = hangar_testkit::repo_with(&[("README", b"hi\n")]);
    let r = repo.path();
    let slow = format!("{u}-slow");
    d.ok(
        r,
        &[
            "env",
            "create",
            &slow,
            "--repo",
            ".",
            "--image",
            "debian-bookworm",
            "--agent-script",
            "echo holding; sleep 1000",
        ],
        0,
    );
    let quick = format!("{u}-quick");
    let script = "for i in 1 2 3; do echo line $i; done; echo \"$HANGAR_PROMPT\" > out.txt";
    d.ok(
        r,
        &[
            "env",
            "create",
            &quick,
            "--repo",
            ".",
            "--image",
            "debian-bookworm",
            "--agent-script",
            script,
        ],
        0,
    );

    let out = d.run(r, &["exec", "--attempts", "2", "--env", &slow, "two"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("2 attempts asked for; a task runs at most 1"),
        "{said}"
    );
    let first = d.ok(r, &["exec", "--detach", "--env", &slow, "hold"], 0);
    let first = first.trim();
    wait_for_line(&d, r, first, "holding");
    let second = d.ok(r, &["exec", "--detach", "--env", &quick, "queued"], 0);
    let second = second.trim();
    let shown = d.json(r, &["show", second, "--json"]);
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["queue_position"], 1);
    assert!(d
        .ok(r, &["show", second], 0)
        .contains("queued      position 1"));

    // Following the queued task: it starts once the first is cancelled, and the
    // stream ends with the task.
    let follower = d
        .command(r)
        .args(["logs", "--follow", second])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    d.ok(r, &["cancel", first], 0);
    let followed = follower.wait_with_output().unwrap();
    assert_eq!(followed.status.code(), Some(0));
    let text = String::from_utf8_lossy(&followed.stdout);
    assert!(
        text.contains("==> agent (attempt 1)\n  line 1\n  line 2\n  line 3\n"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("==> ready"), "{text}");
    assert_eq!(d.json(r, &["show", first, "--json"])["status"], "cancelled");
    assert!(d.ok(r, &["diff", second], 0).contains("+queued"));
}

#[test]
fn fifty_tasks_at_once_all_finish_each_with_its_own_diff() {
    let d = Daemon::start(&[]);
    let u = unique("load");
    let repo = hangar_testkit::repo_with(&[("README", b"hi\n")]);
    let r = repo.path();
    d.ok(
        r,
        &[
            "env",
            "create",
            &u,
            "--repo",
            ".",
            "--image",
            "debian-bookworm",
            "--agent-script",
            "echo \"$HANGAR_PROMPT\" > out.txt",
        ],
        0,
    );
    // Warm the cache, so the fifty share one snapshot.
    d.ok(r, &["exec", "--quiet", "--env", &u, "warm"], 0);

    let submitted: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (d, u) = (&d, &u);
                s.spawn(move || {
                    let prompt = format!("task number {i}");
                    let id = d.ok(r, &["exec", "--detach", "--env", u, &prompt], 0);
                    (id.trim().to_string(), prompt)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids: Vec<&str> = submitted.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "every task got an id of its own");
    for (id, prompt) in &submitted {
        d.ok(r, &["wait", id, "--timeout", "10m"], 0);
        let diff = d.ok(r, &["diff", id], 0);
        assert!(diff.contains(&format!("+{prompt}\n")), "task {id}: {diff}");
        assert_eq!(diff.matches("+task number").count(), 1, "task {id}: {diff}");
    }
    let listed = d.json(r, &["list", "--json", "--env", &u, "--limit", "100"]);
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 51);
}

#[test]
fn remote_clients_need_a_token_and_act_in_its_workspace() {
    let repo = hangar_testkit::repo_with(&[("README", b"hi\n")]);
    let r = repo.path();
    // A token's repository on the host's loopback is the admin's to open.
    let served = hangar_testkit::gitd::GitDaemon::serve(r.parent().unwrap());
    let d = Daemon::start(&[
        "--listen",
        "tcp:127.0.0.1:0",
        "--open-internal",
        &served.authority(),
    ]);
    let addr = d.tcp_addr();
    let ws = unique("remote");
    let token = d.ok(r, &["token", "create", "--workspace", &ws], 0);
    let token = token.trim().to_string();
    assert!(token.starts_with("hgr_"), "{token}");

    let remote = |token: Option<&str>, args: &[&str]| {
        let mut cmd = d.command(r);
        cmd.env_remove("HANGAR_SOCKET").env("HANGAR_URL", &addr);
        if let Some(t) = token {
            cmd.env("HANGAR_TOKEN", t);
        }
        cmd.args(args).output().unwrap()
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let out = remote(None, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("failed to authenticate: this listener needs a bearer token"),
        "{}",
        stderr(&out)
    );
    let t = Some(token.as_str());
    let name = unique("renv");
    let create = |repo: &str| {
        remote(
            t,
            &[
                "env",
                "create",
                &name,
                "--repo",
                repo,
                "--image",
                "debian-bookworm",
                "--agent-script",
                "echo r > r.txt",
            ],
        )
    };
    // A token names repositories by URL: a path would read the daemon's machine.
    let out = create(".");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a path on the daemon's machine"),
        "{}",
        stderr(&out)
    );
    let url = served.url(&r.file_name().unwrap().to_string_lossy());
    let out = create(&url);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = remote(t, &["exec", "--quiet", "--env", &name, "remote task"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = remote(t, &["list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "the workspace holds just its own task");
    // The local admin's default workspace does not see it.
    let out = d.run(r, &["show", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("failed to find task `{id}`")),
        "{}",
        stderr(&out)
    );

    let out = remote(t, &["token", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only the local admin"),
        "{}",
        stderr(&out)
    );
    let tokens = d.json(r, &["token", "ls", "--json"]);
    let mine: Vec<&Value> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["workspace"] == ws.as_str())
        .collect();
    assert_eq!(mine.len(), 1);
    assert!(
        !tokens.to_string().contains(&token),
        "tokens are never listed"
    );
    d.ok(r, &["token", "rm", mine[0]["id"].as_str().unwrap()], 0);
    let out = remote(t, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the token is not known"),
        "{}",
        stderr(&out)
    );
}

/// Regression: a token tenant reached the daemon host's loopback and its own addresses
/// (a `git://127.0.0.1` repository, an allow rule or model endpoint there, a `cache
/// export` that overwrote an image in a registry on loopback) and pulled images into the
/// installation's store. Every destination of a token's workspace is checked; the admin's
/// `--open-internal` opens exactly the hosts it names.
#[test]
fn a_token_reaches_no_internal_host_but_the_one_the_admin_opened() {
    let repo = hangar_testkit::repo_with(&[("README", b"hi\n")]);
    let r = repo.path();
    let served = hangar_testkit::gitd::GitDaemon::serve(r.parent().unwrap());
    let url = served.url(&r.file_name().unwrap().to_string_lossy());
    let registry = hangar_testkit::Registry::start();
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = loopback.local_addr().unwrap().port();
    // A public address of the host's own (as eth0's may be), with a service on 0.0.0.0.
    let own: std::net::IpAddr = "198.51.100.79".parse().unwrap();
    hangar_testkit::upstream::add_loopback_address(own);
    let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let any_port = any.local_addr().unwrap().port();
    let d = Daemon::start(&[
        "--listen",
        "tcp:127.0.0.1:0",
        "--open-internal",
        &served.authority(),
    ]);
    let ws = unique("tenant");
    let token = d.ok(r, &["token", "create", "--workspace", &ws], 0);
    let (addr, token) = (d.tcp_addr(), token.trim().to_string());
    let files = tempfile::tempdir().unwrap();
    let remote = |args: &[&str]| {
        let mut cmd = d.command(files.path());
        cmd.env_remove("HANGAR_SOCKET")
            .env("HANGAR_URL", &addr)
            .env("HANGAR_TOKEN", &token);
        cmd.args(args).output().unwrap()
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let refused = |out: &Output, says: &[&str]| {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
        for s in says {
            assert!(stderr(out).contains(s), "{s:?} not in: {}", stderr(out));
        }
    };
    let create = |name: &str, repo: &str, image: &str, rest: &str| {
        let path = files.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\nrepo = \"{repo}\"\nimage = \"{image}\"\n{rest}\n\
                 [agent]\nscript = \"echo t > t.txt\"\n"
            ),
        )
        .unwrap();
        remote(&["env", "create", "--file", path.to_str().unwrap()])
    };
    let bookworm = "debian-bookworm";
    let other = format!("git://127.0.0.1:{closed}/x");
    refused(
        &create("repo", &other, bookworm, ""),
        &[
            &format!("failed to use repo `{other}`"),
            &format!("--open-internal 127.0.0.1:{closed}"),
        ],
    );
    refused(
        &create("ssh", "ssh://git@127.0.0.1/x", bookworm, ""),
        &["only the local admin may name an ssh"],
    );
    refused(
        &create(
            "allow",
            &url,
            bookworm,
            &format!("[network.agent]\naccess = \"limited\"\nallow = [\"127.0.0.1:{closed}\"]"),
        ),
        &[&format!("network.agent.allow `127.0.0.1:{closed}`")],
    );
    refused(
        &create(
            "own",
            &url,
            bookworm,
            &format!("[network.setup]\naccess = \"limited\"\nallow = [\"{own}:{any_port}\"]"),
        ),
        &[
            &format!("network.setup.allow `{own}:{any_port}`"),
            "host-local",
        ],
    );
    let endpoint = format!("http://127.0.0.1:{closed}/v1");
    let out = create("endpoint", &url, bookworm, "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(
        files.path().join("endpoint.toml"),
        format!(
            "name = \"endpoint\"\nrepo = \"{url}\"\nimage = \"{bookworm}\"\n\
             [agent]\nscript = \"true\"\nendpoint = \"{endpoint}\"\n"
        ),
    )
    .unwrap();
    refused(
        &remote(&["env", "update", "endpoint", "--file", "endpoint.toml"]),
        &["failed to use [agent] endpoint"],
    );
    // An image not in the store is the admin's to pull.
    let out = create("pull", &url, "registry.example.test/nothing:1", "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    refused(
        &remote(&["exec", "--quiet", "--env", "pull", "p"]),
        &["only the local admin pulls images", "hangar image pull"],
    );

    // The one host the admin opened works: a task builds a snapshot from its repository.
    let out = create("good", &url, bookworm, "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = remote(&["exec", "--quiet", "--env", "good", "task"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A registry on loopback is not opened: export and import are refused before any
    // connection (the registry stays empty).
    let reference = format!("{}/tenant/snap:1", registry.addr);
    for args in [
        vec!["cache", "export", "good", &reference, "--insecure"],
        vec!["cache", "import", &reference, "--insecure"],
    ] {
        refused(
            &remote(&args),
            &[&format!("the registry of `{reference}`"), "--open-internal"],
        );
    }
    assert!(
        !registry.storage().join("docker").exists(),
        "nothing was pushed"
    );
}

/// Regression: the idle exit counted requests only, so a daemon left alone during a long
/// `run` (or an image build, or a followed stream) exited under it.
#[test]
fn a_long_run_keeps_an_idle_daemon_up() {
    let d = Daemon::start(&["--idle-exit", "1s"]);
    let out = d.ok(
        Path::new("/"),
        &[
            "run",
            "--image",
            "debian-bookworm",
            "--",
            "sh",
            "-c",
            "sleep 3; echo still here",
        ],
        0,
    );
    assert_eq!(out, "still here\n");
}

/// What a browser does with a one-time link: opens it (a page with a button: the GET
/// must use nothing up), then posts its code. The two statuses and the cookie set.
fn browse(url: &str) -> (u16, u16, Option<String>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("a plain HTTP link");
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let code = path.split_once("code=").expect("a code in the link").1;
    let send = |request: String| {
        let mut conn = std::net::TcpStream::connect(authority).unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        let head = answer.split("\r\n\r\n").next().unwrap().to_string();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let cookie = head.lines().find_map(|l| {
            let (name, value) = l.split_once(": ")?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.to_string())
        });
        (status, cookie)
    };
    let (opened, cookie) = send(format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(cookie, None, "opening the link signs nothing in");
    let body = format!("code={code}");
    let (posted, cookie) = send(format!(
        "POST /ui/sign-in HTTP/1.1\r\nHost: {authority}\r\nOrigin: http://{authority}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    ));
    (opened, posted, cookie)
}

#[test]
fn hangar_ui_prints_a_one_time_link_to_the_tcp_listener() {
    let d = Daemon::start(&["--listen", "tcp:127.0.0.1:0"]);
    let addr = d.tcp_addr();
    let ui = |args: &[&str]| {
        // No desktop: nothing is opened, so the link is still unused.
        d.command(Path::new("/"))
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .args(args)
            .output()
            .unwrap()
    };

    let out = ui(&["ui", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let links: Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = links["urls"][0].as_str().unwrap().to_string();
    assert_eq!(links["urls"].as_array().unwrap().len(), 1, "{links}");
    let prefix = format!("http://{addr}/ui/sign-in?code=hgc_");
    assert!(url.starts_with(&prefix), "{url}");
    let expires = chrono::DateTime::parse_from_rfc3339(links["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let in_ten = chrono::Utc::now().timestamp() + 600;
    assert!((in_ten - 60..=in_ten).contains(&expires), "{links}");

    let (opened, posted, cookie) = browse(&url);
    assert_eq!((opened, posted), (200, 303));
    assert!(cookie.unwrap().starts_with("hangar_session=hgs_"));
    let (opened, posted, cookie) = browse(&url);
    assert_eq!((opened, posted), (200, 401), "the link works once");
    assert_eq!(cookie, None);

    // As text: the link on stdout, what it is on stderr.
    let out = ui(&["ui"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.trim().starts_with(&prefix), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it works once, until"),
        "{out:?}"
    );
    assert_eq!(browse(stdout.trim()).1, 303);

    // A daemon without a TCP listener has no link to give.
    let socket_only = Daemon::start(&[]);
    let out = socket_only.run(Path::new("/"), &["ui"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hangar serve --listen tcp:HOST:PORT"),
        "{out:?}"
    );
}
