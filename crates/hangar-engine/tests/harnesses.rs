//! The harness conformance suite: every adapter (the five CLIs, each installed from its
//! registry into a cached layer, and the script harness running a small agent of its
//! own), in a real sandbox, through hangar's proxy, against the scripted model. Each harness runs the same cases: the model asks for a file to be
//! written, the run ends ready with the file in the diff and the command and final
//! message in the events, the model's key reaches the model (and only the real key);
//! a model that refuses makes the attempt `error` with the CLI's message; a model that
//! hangs is stopped by the timeout. One test per harness, so its install is paid once.

use std::net::IpAddr;

use hangar_engine::{Engine, TaskRequest};
use hangar_secrets::Secret;
use hangar_spec::{Approval, AttemptStatus, Harness, Phase, TaskId};
use hangar_testkit::model::{Behavior, ModelServer, Turn};

mod common;

const KEY: &str = "sk-model-real-key-0123456789";
const MARKER: &str = "AGENTS-MARKER-7f3a";
const REFUSAL: &str = "scripted failure: the model is out of service";

/// How a harness is exercised: where its model listens, and what its CLI says when the
/// model refuses.
struct Case {
    kind: Harness,
    /// The model server's address: the host's loopback (reached through the forwarder)
    /// or a "public" address (reached through the proxy like any host).
    ip: &'static str,
    /// The endpoint's path, in the provider's convention.
    path: &'static str,
    /// What the attempt's error says when the model refuses.
    refused: &'static str,
    /// What the events show of the write.
    shows: Shows,
}

#[derive(PartialEq)]
enum Shows {
    /// The shell command the model asked for.
    Command,
    /// The file (aider edits through its reply, not a command).
    File,
    /// Only the final message (the script harness has no event stream).
    FinalOnly,
}

/// The `script` harness's agent: a few lines of Python that call the model (Chat
/// Completions, one shell tool) and run what it asks.
const MINI_AGENT: &str = r#"python3 - <<'PY'
import json, os, subprocess, sys, urllib.error, urllib.request
url = os.environ["HANGAR_MODEL_ENDPOINT"].rstrip("/") + "/chat/completions"
rules = open("AGENTS.md").read() if os.path.exists("AGENTS.md") else ""
messages = [{"role": "system", "content": rules},
            {"role": "user", "content": os.environ["HANGAR_PROMPT"]}]
tools = [{"type": "function", "function": {"name": "bash", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}}}}}]
for _ in range(5):
    body = json.dumps({"model": os.environ["HANGAR_MODEL"], "messages": messages,
                       "tools": tools}).encode()
    req = urllib.request.Request(url, body, {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + os.environ["HANGAR_MODEL_KEY"]})
    try:
        reply = json.load(urllib.request.urlopen(req))
    except urllib.error.HTTPError as e:
        sys.exit("model error: " + e.read().decode())
    msg = reply["choices"][0]["message"]
    messages.append(msg)
    if not msg.get("tool_calls"):
        print(msg["content"])
        break
    for c in msg["tool_calls"]:
        cmd = json.loads(c["function"]["arguments"])["command"]
        print("running:", cmd)
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
        messages.append({"role": "tool", "tool_call_id": c["id"],
                         "content": out.stdout + out.stderr})
PY"#;

/// A tool on a PATH that only `~/.bashrc` names, and a cache file in the home directory.
const SETUP_ARRANGES: &str = r#"mkdir -p /opt/setup-tools/bin ~/.cache/hangar-probe
printf '#!/bin/sh\necho tool from setup\n' > /opt/setup-tools/bin/setup-tool
chmod +x /opt/setup-tools/bin/setup-tool
echo 'export PATH=/opt/setup-tools/bin:$PATH' >> ~/.bashrc
echo 'cache from setup' > ~/.cache/hangar-probe/marker"#;

fn writes_hello() -> Behavior {
    Behavior::Script(vec![
        Turn::Write {
            path: "hello.txt".into(),
            content: "hi from the model\n".into(),
        },
        Turn::Text("created hello.txt".into()),
    ])
}

async fn environment(
    engine: &Engine,
    case: &Case,
    model: &ModelServer,
    name: &str,
    timeout: &str,
    setup: &str,
) {
    let repo = hangar_testkit::repo_with(&[
        ("README.md", b"a repository for the harness suite\n"),
        (
            "AGENTS.md",
            format!("# Rules\n{MARKER}: be brief.\n").as_bytes(),
        ),
    ]);
    let file = format!(
        r#"name = "{name}"
repo = "{repo}"
image = "debian-bookworm"

[secrets.MODEL_KEY]

[setup]
script = '''
{setup}
'''

[agent]
harness = "{harness}"
model = "test-model"
endpoint = "{base}{path}"
key = "MODEL_KEY"
timeout = "{timeout}"
script = '''
{script}
'''
"#,
        script = if case.kind == Harness::Script {
            MINI_AGENT
        } else {
            ""
        },
        repo = repo.path().display(),
        harness = case.kind,
        base = model.base_url(),
        path = case.path,
    );
    engine
        .create_env(&format!("{name}.toml"), &file, repo.path())
        .await
        .unwrap();
    engine
        .secret_set(name, "MODEL_KEY", &Secret::new(KEY.into()).unwrap())
        .await
        .unwrap();
    // The repository must outlive the environment's mirror refreshes of this test.
    std::mem::forget(repo);
}

fn request(env: &str, approval: Option<Approval>) -> TaskRequest {
    TaskRequest {
        approval,
        ..common::request(env, "create hello.txt saying hi")
    }
}

async fn events(engine: &Engine, id: &TaskId) -> Vec<String> {
    engine
        .events(&common::handle(engine, id).await, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| match e.exit_code {
            Some(c) => format!("{} {} => {c}", e.kind, e.text),
            None => format!("{} {}", e.kind, e.text),
        })
        .collect()
}

async fn conformance(case: Case) {
    let ip: IpAddr = case.ip.parse().unwrap();
    if !ip.is_loopback() {
        hangar_testkit::upstream::add_loopback_address(ip);
    }
    let model = ModelServer::start(ip, writes_hello());
    let engine = common::engine().await;
    let name = format!("harness-{}-{}", case.kind, TaskId::random());
    environment(&engine, &case, &model, &name, "4m", "").await;

    // Writes the file the model asks for.
    let (task, attempt) = common::run(&engine, &request(&name, None)).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(
        attempt.status,
        AttemptStatus::Ready,
        "{:?}\n{}",
        attempt.error,
        logs.join("\n")
    );
    let diff = common::diff(&engine, &task.id, 1).await;
    assert!(diff.contains("+++ b/hello.txt"), "{diff}");
    assert!(diff.contains("+hi from the model"), "{diff}");
    // The CLI's own files (aider's histories) are not the agent's work.
    assert_eq!(
        hangar_engine::diff::patch_paths(diff.as_bytes()).unwrap(),
        ["hello.txt"],
        "{diff}"
    );
    assert_eq!(
        attempt.final_message.as_deref(),
        Some("created hello.txt"),
        "{}",
        logs.join("\n")
    );
    let seen = events(&engine, &task.id).await;
    match case.shows {
        Shows::Command => assert!(
            seen.iter().any(|e| e.starts_with("command ")
                && e.contains("hello.txt")
                && e.ends_with("=> 0")),
            "{seen:#?}"
        ),
        Shows::File => assert!(seen.contains(&"file hello.txt".to_string()), "{seen:#?}"),
        Shows::FinalOnly => assert_eq!(seen.len(), 1, "{seen:#?}"),
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("final created hello.txt")
    );

    // The model saw the real key and never its placeholder; AGENTS.md reached it.
    let calls: Vec<_> = model
        .requests()
        .into_iter()
        .filter(|r| r.is_model_call())
        .collect();
    assert!(!calls.is_empty(), "no model call reached the model");
    for c in &calls {
        let key = c.header("x-api-key").map(str::to_string).or_else(|| {
            c.header("authorization")
                .map(|a| a.trim_start_matches("Bearer ").to_string())
        });
        assert_eq!(key.as_deref(), Some(KEY), "{} {:?}", c.path, c.headers);
    }
    assert!(
        calls.iter().any(|c| c.body.contains(MARKER)),
        "AGENTS.md never reached the model"
    );
    let net = engine
        .network_log(&common::handle(&engine, &task.id).await, None)
        .await
        .unwrap();
    assert!(
        net.iter().any(|e| e.phase == "agent"
            && e.rule
                .as_deref()
                .is_some_and(|r| r.starts_with("agent.endpoint "))
            && e.decision == "allowed"),
        "{net:#?}"
    );
    let stored = format!("{net:?} {logs:?} {seen:?} {diff}");
    assert!(!stored.contains(KEY), "the key was stored");

    // What setup arranged reaches the agent's commands, whatever shell the CLI runs them
    // in: the PATH it put in ~/.bashrc and the caches it filled in the home directory
    // (regression: Codex's `bash -lc` under a fresh home lost both).
    if case.shows != Shows::File {
        model.set_behavior(Behavior::Script(vec![
            Turn::Shell("{ setup-tool; cat ~/.cache/hangar-probe/marker; } > env.txt".into()),
            Turn::Text("wrote env.txt".into()),
        ]));
        let arranged = format!("{name}-arranged");
        environment(&engine, &case, &model, &arranged, "4m", SETUP_ARRANGES).await;
        let (task, attempt) = common::run(&engine, &request(&arranged, None)).await;
        let logs = common::logs(&engine, &task.id).await.join("\n");
        assert_eq!(
            attempt.status,
            AttemptStatus::Ready,
            "{:?}\n{logs}",
            attempt.error
        );
        let diff = common::diff(&engine, &task.id, 1).await;
        assert!(
            diff.contains("+tool from setup\n+cache from setup\n"),
            "{diff}\n{logs}"
        );
    }

    // A model that refuses: the attempt is an error with the CLI's own message.
    model.set_behavior(Behavior::Fail {
        status: 400,
        message: REFUSAL.into(),
    });
    let (task, attempt) = common::run(&engine, &request(&name, None)).await;
    assert_eq!(attempt.status, AttemptStatus::Error);
    let error = attempt.error.unwrap_or_default();
    let logs = common::logs(&engine, &task.id).await.join("\n");
    if case.kind == Harness::Script {
        // A script's own words are in its log; its error names its failing line.
        assert!(
            error.starts_with("the agent script failed at line "),
            "{error}"
        );
        assert!(logs.contains(case.refused), "{logs}");
    } else {
        assert!(
            error.starts_with(&format!("the {} agent failed: ", case.kind))
                && error.contains(case.refused),
            "{error}\n{logs}"
        );
        let seen = events(&engine, &task.id).await;
        assert!(seen.iter().any(|e| e.starts_with("error ")), "{seen:#?}");
    }

    // A model that hangs: the outer timeout stops the CLI.
    model.set_behavior(Behavior::Hang);
    let hang = format!("{name}-hang");
    environment(&engine, &case, &model, &hang, "40s", "").await;
    let (_, attempt) = common::run(&engine, &request(&hang, None)).await;
    assert_eq!(attempt.status, AttemptStatus::Error);
    let who = match case.kind {
        Harness::Script => "agent script".to_string(),
        kind => format!("{kind} agent"),
    };
    assert_eq!(
        attempt.error.as_deref(),
        Some(format!("the {who} did not finish within 40s and was stopped").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script() {
    conformance(Case {
        kind: Harness::Script,
        ip: "127.0.0.1",
        path: "/v1",
        refused: REFUSAL,
        shows: Shows::FinalOnly,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex() {
    conformance(Case {
        kind: Harness::Codex,
        ip: "127.0.0.1",
        path: "/v1",
        refused: REFUSAL,
        shows: Shows::Command,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude() {
    conformance(Case {
        kind: Harness::Claude,
        ip: "127.0.0.1",
        path: "",
        refused: REFUSAL,
        shows: Shows::Command,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw() {
    conformance(Case {
        kind: Harness::Openclaw,
        ip: "127.0.0.1",
        path: "/v1",
        refused: "LLM request failed",
        shows: Shows::Command,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hermes() {
    conformance(Case {
        kind: Harness::Hermes,
        ip: "203.0.113.21",
        path: "/v1",
        refused: REFUSAL,
        shows: Shows::Command,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aider() {
    conformance(Case {
        kind: Harness::Aider,
        ip: "203.0.113.22",
        path: "/v1",
        refused: REFUSAL,
        shows: Shows::File,
    })
    .await;
}

/// An environment of the `script` harness whose agent script probes what it may do.
async fn script_environment(engine: &Engine, name: &str, script: &str) {
    let repo = hangar_testkit::repo_with(&[("README.md", b"read me\n")]);
    let file = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\n[agent]\nscript = '''\n{script}\n'''\n",
        repo.path().display()
    );
    engine
        .create_env(&format!("{name}.toml"), &file, repo.path())
        .await
        .unwrap();
    std::mem::forget(repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_refuses_every_write_and_the_diff_stays_empty() {
    let engine = common::engine().await;
    let name = format!("readonly-{}", TaskId::random());
    let script = r#"w=$PWD
for probe in "echo x >> README.md" "touch new.txt" "mv /workspace /moved" \
             "umount -l /workspace" "git commit --allow-empty -qm x"; do
  if (eval "$probe") 2>/dev/null; then echo "probe wrote: $probe"; else echo "probe refused: $probe"; fi
done
echo scratch > /tmp/scratch && echo "probe elsewhere: ok"
# Where the move worked (not read-only), put the workspace back for collect.
cd / && if [ -d /moved ]; then mv /moved /workspace; fi
echo done"#;
    script_environment(&engine, &name, script).await;
    let (task, attempt) = common::run(&engine, &request(&name, Some(Approval::ReadOnly))).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(attempt.status, AttemptStatus::Ready, "{logs:#?}");
    let probes: Vec<&String> = logs.iter().filter(|l| l.starts_with("probe ")).collect();
    assert_eq!(probes.len(), 6, "{logs:#?}");
    assert!(
        probes
            .iter()
            .all(|p| p.starts_with("probe refused") || *p == "probe elsewhere: ok"),
        "{probes:#?}"
    );
    let diff = common::diff(&engine, &task.id, 1).await;
    assert!(diff.is_empty(), "{diff}");

    // The same script in auto mode writes: the refusals above came from the mode.
    let (task, attempt) = common::run(&engine, &request(&name, Some(Approval::Auto))).await;
    assert_eq!(
        attempt.status,
        AttemptStatus::Ready,
        "{:#?}",
        common::logs(&engine, &task.id).await
    );
    let diff = common::diff(&engine, &task.id, 1).await;
    assert!(
        diff.contains("diff --git a/new.txt b/new.txt") && diff.contains("+x"),
        "{diff}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_cli_agent_gets_an_error_for_its_write() {
    let model = ModelServer::start("127.0.0.1".parse().unwrap(), writes_hello());
    let engine = common::engine().await;
    let case = Case {
        kind: Harness::Codex,
        ip: "127.0.0.1",
        path: "/v1",
        refused: REFUSAL,
        shows: Shows::Command,
    };
    let name = format!("readonly-codex-{}", TaskId::random());
    environment(&engine, &case, &model, &name, "4m", "").await;
    let (task, attempt) = common::run(&engine, &request(&name, Some(Approval::ReadOnly))).await;
    assert_eq!(attempt.status, AttemptStatus::Ready, "{:?}", attempt.error);
    let seen = events(&engine, &task.id).await;
    let write = seen
        .iter()
        .find(|e| e.starts_with("command ") && e.contains("hello.txt"))
        .expect("the write was attempted");
    assert!(!write.ends_with("=> 0"), "{seen:#?}");
    let detail = engine
        .events(&common::handle(&engine, &task.id).await, None)
        .await
        .unwrap();
    assert!(
        detail.iter().any(|e| e
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("Read-only file system")),
        "{detail:#?}"
    );
    let diff = common::diff(&engine, &task.id, 1).await;
    assert!(diff.is_empty(), "{diff}");
}

/// A CLI agent as `[agent] user`: Codex CLI runs as that user, its state in a directory
/// it owns, and the command the model asks for runs as it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_agent_runs_as_the_environments_user() {
    let model = ModelServer::start(
        "127.0.0.1".parse().unwrap(),
        Behavior::Script(vec![
            Turn::Shell("id -un > who.txt && echo \"$HOME\" >> who.txt".into()),
            Turn::Text("wrote who.txt".into()),
        ]),
    );
    let engine = common::engine().await;
    let case = Case {
        kind: Harness::Codex,
        ip: "127.0.0.1",
        path: "/v1",
        refused: REFUSAL,
        shows: Shows::Command,
    };
    let name = format!("user-codex-{}", TaskId::random());
    environment(&engine, &case, &model, &name, "4m", "").await;
    let (rec, _) = engine.env(&name).await.unwrap();
    let file = rec.source.replace("[agent]\n", "[agent]\nuser = \"dev\"\n");
    engine
        .update_env(&name, "user.toml", &file, std::path::Path::new(&rec.repo))
        .await
        .unwrap();
    let (task, attempt) = common::run(&engine, &request(&name, None)).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(
        attempt.status,
        AttemptStatus::Ready,
        "{:?}\n{}",
        attempt.error,
        logs.join("\n")
    );
    let diff = common::diff(&engine, &task.id, 1).await;
    assert!(diff.contains("+dev\n+/home/dev\n"), "{diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_harness_reuses_the_environment_and_full_access_opens_the_network() {
    // Outside the host: full access reaches the internet, never the host's own addresses.
    let ip: IpAddr = "203.0.113.23".parse().unwrap();
    let model = ModelServer::start_outside(ip, writes_hello());
    let engine = common::engine().await;
    let name = format!("switch-{}", TaskId::random());
    let probe = format!(
        "code=$(curl -s -o /dev/null -w '%{{http_code}}' {}/v1/models || true); echo \"probe $code\"",
        model.base_url()
    );
    script_environment(&engine, &name, &probe).await;
    let (_, first) = common::run(&engine, &request(&name, None)).await;
    assert_eq!(first.status, AttemptStatus::Ready, "{:?}", first.error);

    // The agent's network is off by default; full-access opens it.
    for (approval, expected) in [
        (Approval::Auto, "probe 403"),
        (Approval::FullAccess, "probe 200"),
    ] {
        let (task, attempt) = common::run(&engine, &request(&name, Some(approval))).await;
        assert_eq!(attempt.status, AttemptStatus::Ready);
        let logs = common::logs(&engine, &task.id).await;
        assert!(logs.iter().any(|l| l == expected), "{approval}: {logs:#?}");
        assert_eq!(common::cache_of(&attempt).status.as_str(), "hit");
    }

    // Another harness on the same environment: the snapshot serves, only the CLI's own
    // (cached) layer is added.
    let endpoint = format!("{}/v1", model.base_url());
    let file = engine.env(&name).await.unwrap().0.source.replace(
        "[agent]\n",
        &format!("[agent]\nendpoint = \"{endpoint}\"\nmodel = \"m\"\n"),
    );
    let repo = engine.env(&name).await.unwrap().1.repo;
    engine
        .update_env(
            &name,
            &format!("{name}.toml"),
            &file,
            std::path::Path::new(&repo),
        )
        .await
        .unwrap();
    let req = TaskRequest {
        harness: Some(Harness::Codex),
        ..request(&name, None)
    };
    let (task, attempt) = common::run(&engine, &req).await;
    assert_eq!(attempt.status, AttemptStatus::Ready, "{:?}", attempt.error);
    assert_eq!(
        common::cache_of(&attempt).status.as_str(),
        "hit",
        "{:#?}",
        common::logs(&engine, &task.id).await
    );
    // The CLI's install, when it runs, is a phase of its own, not setup beside a hit.
    let phases: Vec<Phase> = attempt.phases.iter().map(|p| p.phase).collect();
    assert!(!phases.contains(&Phase::Setup), "{phases:?}");
}
