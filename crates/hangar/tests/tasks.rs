//! Environments and tasks through the `hangar` binary, as a user drives them: exec, list,
//! show, logs, diff, apply into a fresh clone, detached runs and bad environment files.

use std::path::Path;
use std::process::{Command, Output};

use hangar_testkit::git;
use serde_json::Value;

mod common;

fn hangar_in(dir: &Path, args: &[&str]) -> Output {
    common::hangar_shared()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run hangar")
}

/// hangar over the data dir `home`, run in `dir`.
fn hangar_at(home: &Path, dir: &Path, args: &[&str]) -> Output {
    common::hangar(home)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run hangar")
}

/// Runs hangar and expects `code`; returns stdout.
fn ok_in(dir: &Path, args: &[&str], code: i32) -> String {
    expect(hangar_in(dir, args), args, code)
}

/// Expects `code` from a finished hangar; returns stdout.
fn expect(out: Output, args: &[&str], code: i32) -> String {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "hangar {args:?}\nstdout: {o}\nstderr: {e}"
    );
    o
}

fn json_in(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok_in(dir, args, 0)).expect("JSON output")
}

fn example(name: &str) -> tempfile::TempDir {
    hangar_testkit::example_repo("pyfix", name)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hangar_spec::TaskId::random())
}

/// `hangar env create NAME --repo . FLAGS...` in `dir`.
fn env_from_flags(dir: &Path, name: &str, flags: &[&str]) {
    let mut args = vec!["env", "create", name, "--repo", "."];
    if !flags.contains(&"--image") {
        args.extend_from_slice(&["--image", "debian-bookworm"]);
    }
    args.extend_from_slice(flags);
    ok_in(dir, &args, 0);
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[test]
fn exec_list_show_logs_diff_and_apply_into_a_fresh_clone() {
    let name = unique("cli");
    let repo = example(&name);
    let r = repo.path();
    ok_in(
        r,
        &["env", "create", "--file", ".hangar/environment.toml"],
        0,
    );

    let out = hangar_in(r, &["exec", "--env", &name, "Fix the failing test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let id = stdout.lines().last().unwrap().to_string();
    assert_eq!(
        id.len(),
        12,
        "the task id is the last line of stdout: {stdout}"
    );
    for phase in ["setup", "checkout", "maintenance", "agent", "collect"] {
        assert!(stderr.contains(&format!("==> {phase} done")), "{stderr}");
    }
    assert!(stderr.contains("ready: 1 file changed, +1 -1"), "{stderr}");

    let list = json_in(r, &["list", "--json", "--env", &name]);
    assert_eq!(keys(&list), ["cursor", "tasks"]);
    assert_eq!(list["cursor"], Value::Null);
    let task = &list["tasks"][0];
    assert_eq!(
        keys(task),
        [
            "attempt_total",
            "branch",
            "created_at",
            "environment",
            "id",
            "status",
            "summary",
            "title",
            "updated_at"
        ]
    );
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["status"], "ready");
    assert_eq!(task["environment"], name.as_str());
    assert_eq!(task["title"], "Fix the failing test");
    assert_eq!(task["attempt_total"], 1);
    assert_eq!(
        task["summary"],
        serde_json::json!({"files_changed": 1, "lines_added": 1, "lines_removed": 1})
    );
    assert!(chrono::DateTime::parse_from_rfc3339(task["created_at"].as_str().unwrap()).is_ok());

    let show = json_in(r, &["show", &id[..6], "--json"]);
    let attempt = &show["attempts"][0];
    assert_eq!(attempt["status"], "ready");
    assert_eq!(attempt["exit_code"], 0);
    assert_eq!(attempt["error"], Value::Null);
    assert!(attempt["final_message"]
        .as_str()
        .unwrap()
        .starts_with("Fixed add()"));
    let phases: Vec<&str> = attempt["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "prepare",
            "setup",
            "checkout",
            "maintenance",
            "agent",
            "collect"
        ]
    );

    let logs = ok_in(r, &["logs", &id], 0);
    assert!(
        logs.contains("==> agent (attempt 1)\n  prompt: Fix the failing test"),
        "{logs}"
    );
    // Every phase the attempt went through, in order, a silent one too (regression:
    // phases that printed nothing were left out).
    let headers: Vec<&str> = logs.lines().filter(|l| l.starts_with("==> ")).collect();
    assert_eq!(
        headers,
        [
            "==> prepare (attempt 1)",
            "==> setup (attempt 1)",
            "==> checkout (attempt 1)",
            "==> maintenance (attempt 1)",
            "==> agent (attempt 1)",
            "==> collect (attempt 1)"
        ],
        "{logs}"
    );
    let diff = ok_in(r, &["diff", &id], 0);
    assert!(diff.starts_with("diff --git a/calc.py b/calc.py"), "{diff}");
    // Regression: `hangar diff X | head -1` ended with `Broken pipe (os error 32)` and
    // exit 1: a reader that stops early is no failure.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = common::hangar_shared()
        .current_dir(r)
        .args(["diff", &id])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), stderr.as_ref()), (Some(0), ""));
    // Regression: the STATUS column was misaligned.
    let table = ok_in(r, &["list", "--env", &name], 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].find("ENVIRONMENT"),
        lines[1].find(name.as_str()),
        "{table}"
    );

    let clone = tempfile::tempdir().unwrap();
    git(clone.path(), &["clone", "-q", r.to_str().unwrap(), "."]);
    let applied = ok_in(clone.path(), &["apply", &id], 0);
    assert_eq!(applied, "calc.py\n");
    let test = Command::new("python3")
        .args(["-m", "unittest", "-q"])
        .current_dir(clone.path())
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "the applied fix does not pass the tests"
    );

    // Applying again conflicts with itself: hangar names the file and exits 1.
    git(clone.path(), &["commit", "-qam", "applied"]);
    std::fs::write(
        clone.path().join("calc.py"),
        "def add(a, b):\n    return b + a + 0\n",
    )
    .unwrap();
    git(clone.path(), &["commit", "-qam", "rewritten"]);
    let out = hangar_in(clone.path(), &["apply", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("conflicts in calc.py"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cache_ls_export_import_and_reset_through_the_cli() {
    let name = unique("cachecli");
    let repo = example(&name);
    let r = repo.path();
    ok_in(
        r,
        &["env", "create", "--file", ".hangar/environment.toml"],
        0,
    );
    let registry = hangar_testkit::Registry::start();
    let snapshot_ref = format!("{}/snapshots/{name}:1", registry.addr);

    let out = hangar_in(r, &["cache", "export", &name, &snapshot_ref, "--insecure"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("hangar: failed to export the snapshot of environment `{name}`: it has no snapshot to export (cache miss: none yet); run a task first")
    );

    ok_in(r, &["exec", "-q", "--env", &name, "fix it"], 0);
    let ls = json_in(r, &["cache", "ls", "--json"]);
    let mine: Vec<&Value> = ls["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["environment"] == name.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{ls}");
    assert_eq!(
        keys(mine[0]),
        [
            "built_at",
            "durable",
            "environment",
            "expires_at",
            "hits",
            "key",
            "last_used_at",
            "reset",
            "size",
            "source"
        ]
    );
    assert_eq!(
        mine[0]["durable"], true,
        "exec waits for the background sync"
    );
    assert_eq!(mine[0]["source"], Value::Null);

    let exported = json_in(
        r,
        &[
            "cache",
            "export",
            &name,
            &snapshot_ref,
            "--insecure",
            "--json",
        ],
    );
    assert_eq!(exported["snapshot"], mine[0]["key"]);

    // Another data dir: the base image through the registry, the same environment file.
    let other = tempfile::tempdir().unwrap();
    let home = other.path();
    let base_ref = format!("{}/base/{name}:1", registry.addr);
    ok_in(
        r,
        &["image", "push", "debian-bookworm", &base_ref, "--insecure"],
        0,
    );
    let at = |args: &[&str], code| expect(hangar_at(home, r, args), args, code);
    at(
        &[
            "image",
            "pull",
            &base_ref,
            "--insecure",
            "--name",
            "debian-bookworm",
        ],
        0,
    );
    at(&["env", "create", "--file", ".hangar/environment.toml"], 0);
    let out = hangar_at(home, r, &["cache", "import", &snapshot_ref, "--insecure"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let short = &exported["snapshot"].as_str().unwrap()[..4];
    assert!(
        stderr.contains(&format!("imported snapshot {short}")),
        "{stderr}"
    );
    let table = at(&["cache", "ls"], 0);
    assert!(
        table.starts_with("ENVIRONMENT") && table.lines().next().unwrap().ends_with("SOURCE"),
        "{table}"
    );
    assert!(
        table.contains(&format!("  imported from {snapshot_ref}")),
        "{table}"
    );
    let out = hangar_at(home, r, &["exec", "-q", "--env", &name, "fix it"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cache: hit (snapshot {short}, imported from {snapshot_ref} just now)"
        )),
        "{stderr}"
    );

    let out = hangar_at(home, r, &["cache", "reset", &name]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("reset 1 snapshot(s)"));
    let out = hangar_at(home, r, &["cache", "gc"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed 1 snapshot(s)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn secrets_are_set_from_stdin_or_a_file_listed_without_values_and_removed() {
    let name = unique("seccli");
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let r = origin.path();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(
        r.join("env.toml"),
        format!(
            "name = \"{name}\"\nrepo = \".\"\nimage = \"debian-bookworm\"\n\
             [setup]\nscript = 'echo \"setup got ${{#TOKEN}} chars\"'\n\
             [secrets.TOKEN]\n[agent]\nscript = 'echo \"agent got ${{TOKEN:-nothing}}\"'\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str], stdin: &[u8], key: Option<&Path>| {
        use std::io::Write;
        let mut cmd = common::hangar_shared();
        cmd.current_dir(r)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // The key is the daemon's: each key gets a daemon of its own.
        match key {
            Some(k) => cmd
                .env("HANGAR_SECRET_KEY_FILE", k)
                .env("HANGAR_SOCKET", k.with_extension("sock")),
            None => cmd.env_remove("HANGAR_SECRET_KEY_FILE"),
        };
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let key = h.join("keys/hangar.key");
    let k = Some(key.as_path());
    expect(
        run(&["env", "create", "--file", "env.toml"], b"", k),
        &[],
        0,
    );

    let out = run(&["exec", "-q", "--env", &name, "go"], b"", k);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "declares secret `TOKEN` without a value; set it with `hangar secret set {name} TOKEN`"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["secret", "set", &name, "TOKEN"], b"ab\n", k);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 4 bytes"));
    let out = run(&["secret", "set", &name, "NOPE"], b"abcdef", k);
    assert!(String::from_utf8_lossy(&out.stderr).contains("declares no secret `NOPE`"));

    let value = format!("v-{}", hangar_spec::TaskId::random());
    expect(
        run(
            &["secret", "set", &name, "TOKEN"],
            format!("{value}\n").as_bytes(),
            k,
        ),
        &["secret", "set"],
        0,
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600,
        "the key file is created private"
    );
    let ls = expect(run(&["secret", "ls", &name, "--json"], b"", k), &[], 0);
    assert!(!ls.contains(&value));
    let ls: Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(ls["secrets"][0]["name"], "TOKEN");
    assert_eq!(ls["secrets"][0]["set"], true);
    assert_eq!(
        ls["secrets"][0]["phases"],
        serde_json::json!(["setup", "maintenance"])
    );

    let out = run(&["exec", "--env", &name, "go"], b"", k);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("setup got {} chars", value.len())),
        "{stderr}"
    );
    assert!(stderr.contains("agent got nothing"), "{stderr}");

    // Another key cannot read the values: the task fails naming the secret.
    let value_file = h.join("value");
    std::fs::write(&value_file, format!("{value}-2")).unwrap();
    let other = h.join("other.key");
    let out = run(&["exec", "-q", "--env", &name, "go"], b"", Some(&other));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed to decrypt secret `TOKEN`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect(
        run(
            &[
                "secret",
                "set",
                &name,
                "TOKEN",
                "--from-file",
                value_file.to_str().unwrap(),
            ],
            b"",
            k,
        ),
        &["secret", "set", "--from-file"],
        0,
    );
    expect(
        run(&["secret", "rm", &name, "TOKEN"], b"", k),
        &["secret", "rm"],
        0,
    );
    let out = run(&["secret", "rm", &name, "TOKEN"], b"", k);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "failed to find secret `TOKEN` of environment `{name}`"
    )));
}

#[test]
fn detached_exec_returns_the_id_and_the_task_finishes_in_the_background() {
    let name = unique("detach");
    let repo = example(&name);
    let r = repo.path();
    ok_in(
        r,
        &["env", "create", "--file", ".hangar/environment.toml"],
        0,
    );
    let out = ok_in(r, &["exec", "--detach", "--env", &name, "fix it"], 0);
    let id = out.trim().to_string();
    // `wait` blocks until it has finished; `status` then exits 0 because it is ready.
    assert_eq!(ok_in(r, &["wait", &id, "--timeout", "2m"], 0), "ready\n");
    assert_eq!(ok_in(r, &["status", &id], 0), "ready\n");
    let v = json_in(r, &["status", &id, "--json"]);
    assert_eq!(v["status"], "ready");
    assert_eq!(v["best"], 1);
}

#[test]
fn a_failing_task_exits_3_names_the_line_and_still_prints_its_id() {
    let name = unique("fails");
    let repo = example(&name);
    let r = repo.path();
    let out = ok_in(
        r,
        &[
            "env",
            "create",
            &name,
            "--repo",
            ".",
            "--image",
            "debian-bookworm",
            "--setup",
            "echo one\nfalse\necho two",
            "--agent-script",
            "true",
        ],
        0,
    );
    assert_eq!(out, "");
    let out = hangar_in(r, &["exec", "--quiet", "--env", &name, "go"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the setup script failed at line 2 (`false`) with exit code 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("setup | one"),
        "the tail is shown: {stderr}"
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let show = json_in(r, &["show", &id, "--json"]);
    assert_eq!(show["status"], "error");
    assert_eq!(show["attempts"][0]["exit_code"], 1);
    assert_eq!(ok_in(r, &["status", &id], 3), "error\n");
    assert_eq!(ok_in(r, &["wait", &id], 3), "error\n");
}

#[test]
fn environments_from_flags_show_resolve_and_refuse_bad_files() {
    let name = unique("flags");
    let repo = example(&name);
    let r = repo.path();
    env_from_flags(r, &name, &["-e", "A=1", "--agent-script", "true"]);
    let show = json_in(r, &["env", "show", &name, "--json"]);
    assert_eq!(show["version"], 1);
    assert_eq!(show["spec"]["env"]["A"], "1");
    assert_eq!(show["spec"]["agent"]["harness"], "script");
    assert_eq!(
        show["spec"]["repo"],
        r.canonicalize().unwrap().to_str().unwrap()
    );
    let tail = r.file_name().unwrap().to_str().unwrap();
    let resolved = ok_in(r, &["env", "resolve", "--repo", tail], 0);
    assert!(resolved.lines().any(|l| l == name), "{resolved}");
    let out = hangar_in(r, &["env", "resolve", "--repo", "nobody/nothing"]);
    assert_eq!(out.status.code(), Some(1));

    std::fs::write(
        r.join("bad.toml"),
        format!("name = \"{name}\"\nrepo = \".\"\nimage = \"debian-bookworm\"\n\n[agnet]\nscript = \"x\"\n"),
    )
    .unwrap();
    let out = hangar_in(r, &["env", "update", &name, "--file", "bad.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("hangar: bad.toml:5: unknown key `agnet`"),
        "{stderr}"
    );
    assert_eq!(json_in(r, &["env", "show", &name, "--json"])["version"], 1);

    let out = hangar_in(r, &["env", "create", "--file", "bad.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let envs = json_in(r, &["env", "list", "--json"]);
    let count = envs["environments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == name.as_str())
        .count();
    assert_eq!(count, 1);
    ok_in(r, &["env", "delete", &name], 0);
    let out = hangar_in(r, &["env", "show", &name]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "hangar: failed to find environment `{name}` (see `hangar env list`)"
    )));
}

/// Regression: the ERR trap wrote to `$2`, which inside a script's function is the
/// function's own argument, so a failure there lost its line.
#[test]
fn a_command_failing_inside_a_function_names_its_line() {
    let name = unique("fnfail");
    let repo = example(&name);
    let r = repo.path();
    let setup = "check() {\n  test -e \"$1\"\n}\ncheck /no/such/file";
    env_from_flags(r, &name, &["--setup", setup, "--agent-script", "true"]);
    let out = hangar_in(r, &["exec", "--quiet", "--env", &name, "go"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the setup script failed at line 2 (`test -e \"$1\"`) with exit code 1"),
        "{stderr}"
    );
}

#[test]
fn logs_network_shows_the_proxys_decisions() {
    let name = unique("netlog");
    let repo = example(&name);
    let r = repo.path();
    let agent = "curl -sS -o /dev/null https://blocked.example/ 2>&1 || true";
    env_from_flags(r, &name, &["--agent-script", agent]);
    let id = ok_in(r, &["exec", "--quiet", "--env", &name, "go"], 0);
    let id = id.trim();
    let text = ok_in(r, &["logs", id, "--network"], 0);
    assert!(
        text.contains(
            "agent       CONNECT blocked.example:443 network-off by network.agent.access = off"
        ),
        "{text}"
    );
    let v = json_in(r, &["logs", id, "--network", "--json"]);
    let entries = v["network"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{v}");
    assert_eq!(
        keys(&entries[0]),
        [
            "attempt",
            "bytes_down",
            "bytes_up",
            "decision",
            "host",
            "method",
            "note",
            "path",
            "phase",
            "port",
            "rule",
            "seq",
            "ts_ms"
        ]
    );
    assert_eq!(entries[0]["decision"], "network-off");
    assert_eq!(entries[0]["port"], 443);
}

#[test]
fn exec_with_an_agent_cli_and_its_events() {
    use hangar_testkit::model::{Behavior, ModelServer, Turn};
    let model = ModelServer::start(
        "127.0.0.1".parse().unwrap(),
        Behavior::Script(vec![
            Turn::Write {
                path: "hello.txt".into(),
                content: "hi\n".into(),
            },
            Turn::Text("created hello.txt".into()),
        ]),
    );
    let name = unique("events");
    let repo = example(&name);
    let r = repo.path();
    let file = r.join("codex.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\nrepo = \".\"\nimage = \"debian-bookworm\"\n[secrets.MODEL_KEY]\n\
             [agent]\nharness = \"codex\"\nmodel = \"m\"\nendpoint = \"{}/v1\"\nkey = \"MODEL_KEY\"\n",
            model.base_url()
        ),
    )
    .unwrap();
    ok_in(r, &["env", "create", "--file", "codex.toml"], 0);
    // A CLI harness without its key is refused before anything runs.
    let out = hangar_in(r, &["exec", "--quiet", "--env", &name, "go"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("MODEL_KEY"));
    std::fs::write(r.join("key.txt"), "sk-cli-key-0123456789\n").unwrap();
    ok_in(
        r,
        &[
            "secret",
            "set",
            &name,
            "MODEL_KEY",
            "--from-file",
            "key.txt",
        ],
        0,
    );

    let v = json_in(r, &["secret", "ls", &name, "--json"]);
    let key = &v["secrets"][0];
    assert_eq!(key["phases"], serde_json::json!(["agent"]), "{v}");
    assert_eq!(
        key["projected_to"],
        serde_json::json!([model.addr.to_string()]),
        "{v}"
    );
    let id = ok_in(
        r,
        &["exec", "--quiet", "--env", &name, "create hello.txt"],
        0,
    );
    let id = id.trim();
    let text = ok_in(r, &["logs", id, "--events"], 0);
    assert!(
        text.contains("#1 command /bin/bash -lc \"printf '%s' 'hi\n' > 'hello.txt'\" (exit 0)"),
        "{text}"
    );
    assert!(text.ends_with("#1 final   created hello.txt\n"), "{text}");
    let v = json_in(r, &["logs", id, "--events", "--json"]);
    let events = v["events"].as_array().unwrap();
    // printf prints nothing: the command's event has no output to show.
    let command = events.iter().find(|e| e["kind"] == "command").unwrap();
    assert_eq!(
        keys(command),
        ["attempt", "exit_code", "kind", "seq", "text", "ts_ms"]
    );
    assert_eq!(events.last().unwrap()["kind"], "final");
    assert!(ok_in(r, &["diff", id], 0).contains("+++ b/hello.txt"));

    // The same environment read-only: the write fails, the diff is empty.
    let id = ok_in(
        r,
        &[
            "exec",
            "--quiet",
            "--env",
            &name,
            "--approval",
            "read-only",
            "create hello.txt",
        ],
        0,
    );
    assert_eq!(ok_in(r, &["diff", id.trim()], 0), "");
    let out = hangar_in(r, &["exec", "--env", &name, "--approval", "yolo", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`yolo` is not one of read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn best_of_n_through_the_cli() {
    let name = unique("best");
    let repo = example(&name);
    let r = repo.path();
    let script =
        r#"if [ "$HANGAR_ATTEMPT" = 2 ]; then echo good > verdict; else seq 1 9 > verdict; fi"#;
    std::fs::write(
        r.join("best.toml"),
        format!(
            "name = \"{name}\"\nrepo = \".\"\nimage = \"debian-bookworm\"\n[agent]\n\
             script = '{script}'\ncheck = \"grep -qx good verdict\"\n"
        ),
    )
    .unwrap();
    ok_in(r, &["env", "create", "--file", "best.toml"], 0);
    let out = hangar_in(
        r,
        &["exec", "--quiet", "--env", &name, "--attempts", "5", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a task runs at most 4"));

    let out = hangar_in(r, &["exec", "--env", &name, "--attempts", "3", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.trim();
    // Regression: three interleaved streams without a label, and "ready" three times
    // without a word of which attempt is best.
    for n in 1..=3 {
        assert!(
            stderr.contains(&format!("==> [{n}] agent done")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("task {id} attempt {n} ready: ")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!(
            "task {id}: best is attempt 2 (ranking 2, 1, 3); `hangar apply {id} --best`"
        )),
        "{stderr}"
    );
    let text = ok_in(r, &["show", id], 0);
    assert!(
        text.contains("best        attempt 2 (ranking 2, 1, 3)"),
        "{text}"
    );
    assert!(text.contains("  check     passed"), "{text}");
    assert!(text.contains("  check     failed (exit code 1)"), "{text}");
    let v = json_in(r, &["show", id, "--json"]);
    assert_eq!(v["best"], 2);
    assert_eq!(v["ranking"], serde_json::json!([2, 1, 3]));
    assert_eq!(v["attempts"][1]["check"]["passed"], true);
    assert_eq!(
        ok_in(r, &["diff", id, "--best"], 0),
        ok_in(r, &["diff", id, "--attempt", "2"], 0)
    );
    assert!(ok_in(r, &["diff", id, "--best"], 0).contains("+good"));
    let logs = ok_in(r, &["logs", id, "--best"], 0);
    assert!(
        logs.contains("(attempt 2)") && !logs.contains("(attempt 1)"),
        "{logs}"
    );
}

#[test]
fn cancel_stops_a_detached_task_and_tears_its_sandbox_down() {
    let name = unique("cancel");
    let repo = example(&name);
    let r = repo.path();
    env_from_flags(r, &name, &["--agent-script", "echo started; sleep 1000"]);
    let id = ok_in(r, &["exec", "--detach", "--env", &name, "wait forever"], 0);
    let id = id.trim();
    // Cancel once the agent runs (before that the cancel would stop an earlier step).
    for _ in 0..600 {
        if ok_in(r, &["logs", id], 0).contains("started") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ok_in(r, &["cancel", id], 0), "cancelled\n");
    let v = json_in(r, &["show", id, "--json"]);
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["attempts"][0]["error"], "cancelled");
    let store = hangar_testkit::shared_store();
    let sandbox = v["attempts"][0]["sandbox"].as_str().unwrap().to_string();
    hangar_testkit::assert_no_traces(
        &hangar_testkit::host(&store),
        &hangar_sandbox::SandboxId::new(sandbox).unwrap(),
    );
    let out = hangar_in(r, &["cancel", id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has already finished (cancelled)"));
}

#[test]
fn exec_from_continues_an_earlier_task() {
    let name = unique("from");
    let repo = example(&name);
    let r = repo.path();
    env_from_flags(
        r,
        &name,
        &["--agent-script", "echo \"$HANGAR_PROMPT\" >> notes.txt"],
    );
    let first = ok_in(r, &["exec", "-q", "--env", &name, "first"], 0);
    let first = first.trim();
    let second = ok_in(r, &["exec", "-q", "--from", first, "second"], 0);
    let second = second.trim();
    let shown = json_in(r, &["show", second, "--json"]);
    assert_eq!(shown["from"], format!("{first}:1"));
    assert_eq!(shown["environment"], name.as_str());
    assert_eq!(shown["attempts"][0]["cache"]["status"], "from");
    let diff = ok_in(r, &["diff", second], 0);
    assert!(diff.contains("+first\n+second\n"), "{diff}");
    let out = hangar_in(r, &["exec", "--from", &format!("{first}:3"), "x"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("task {first} has no attempt 3")),
        "{stderr}"
    );
}

#[test]
fn pr_pushes_the_attempts_branch_and_forge_connect_names_the_forge() {
    let name = unique("pr");
    let repo = example(&name);
    let r = repo.path();
    ok_in(
        r,
        &["env", "create", "--file", ".hangar/environment.toml"],
        0,
    );
    let out = ok_in(
        r,
        &["exec", "--env", &name, "--quiet", "Fix the failing test"],
        0,
    );
    let id = out.lines().last().unwrap().to_string();

    // No forge: the branch alone, pushed to the repository.
    let got = json_in(r, &["pr", &id, "--branch", "fix/test", "--json"]);
    assert_eq!(
        keys(&got),
        [
            "attempt",
            "base",
            "branch",
            "commit",
            "created_at",
            "forge",
            "new",
            "number",
            "task",
            "url"
        ]
    );
    assert_eq!(
        (got["new"].as_bool(), got["forge"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (got["number"].clone(), got["base"].as_str()),
        (Value::Null, Some("main"))
    );
    let commit = got["commit"].as_str().unwrap().to_string();
    let pushed = Command::new("git")
        .current_dir(r)
        .args(["rev-parse", "fix/test"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&pushed.stdout).trim(), commit);
    // Asked again: the same branch, nothing pushed.
    let out = hangar_in(r, &["pr", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("already pushed branch fix/test"),
        "{stderr}"
    );
    assert!(stderr.contains("no pull request was opened"), "{stderr}");
    let shown = ok_in(r, &["show", &id], 0);
    assert!(
        shown.contains(&format!(
            "pull        attempt 1: no pull request (branch fix/test at {}, into main)",
            &commit[..12]
        )),
        "{shown}"
    );
    let view = json_in(r, &["show", &id, "--json"]);
    assert_eq!(view["pull_requests"][0]["commit"], commit.as_str());

    // A forge named: [forge] and its two secrets, declared for no phase.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "webhook secret value\n").unwrap();
    let connected = json_in(
        r,
        &[
            "forge",
            "connect",
            "github",
            "--env",
            &name,
            "--webhook-secret-file",
            secret.path().to_str().unwrap(),
            "--repository",
            "octo/app",
            "--json",
        ],
    );
    assert_eq!(connected["repository"], "octo/app");
    assert_eq!(connected["token_secret"], "GITHUB_TOKEN");
    assert_eq!(connected["token_set"], false);
    let secrets = json_in(r, &["secret", "ls", &name, "--json"]);
    let listed: Vec<(String, Value, Value)> = secrets["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["phases"].clone(),
                s["set"].clone(),
            )
        })
        .collect();
    assert!(
        listed.contains(&(
            "GITHUB_TOKEN".into(),
            serde_json::json!([]),
            Value::Bool(false)
        )),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(
            "GITHUB_WEBHOOK_SECRET".into(),
            serde_json::json!([]),
            Value::Bool(true)
        )),
        "{listed:?}"
    );
    // The earlier task's pull request now needs the token: a clear error, nothing lost.
    let out = hangar_in(r, &["pr", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("hangar secret set"), "{stderr}");
    assert!(stderr.contains("GITHUB_TOKEN"), "{stderr}");
    // A bad webhook secret file is named.
    let out = hangar_in(
        r,
        &[
            "forge",
            "connect",
            "github",
            "--env",
            &name,
            "--webhook-secret-file",
            "/nonexistent",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("/nonexistent"), "{stderr}");
}
