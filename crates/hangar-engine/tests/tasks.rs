//! Tasks end to end in real sandboxes: the example repository, every kind of change in a
//! diff, setup failures, the bashrc rule, branches and commits, timeouts, cancellation,
//! and a repository that tries to run code on the host through git.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use hangar_engine::{Engine, EngineConfig, Event, Progress, TaskFilter, TaskRequest};
use hangar_sandbox::SandboxId;
use hangar_spec::{AttemptStatus, Phase, TaskId, TaskStatus};
use hangar_store::db::{AttemptRecord, Stream, TaskRecord};
use hangar_testkit::{git, repo_with as repo};
use tokio::sync::watch;

mod common;

use common::{engine, request};

/// A new environment over `repo`; `extra` is more of the file (tables).
async fn env(engine: &Engine, repo: &Path, extra: &str) -> String {
    let name = format!("t-{}", TaskId::random());
    let source = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n{extra}",
        repo.display()
    );
    engine
        .create_env("test.toml", &source, repo)
        .await
        .expect("create the environment");
    name
}

fn agent(script: &str) -> String {
    format!("[agent]\nscript = '''\n{script}\n'''\n")
}

/// Runs a task to the end; checks that its sandbox left nothing behind.
async fn run(engine: &Engine, req: TaskRequest) -> (TaskRecord, AttemptRecord) {
    let (task, attempt) = common::run(engine, &req).await;
    no_traces(&attempt);
    (task, attempt)
}

fn no_traces(attempt: &AttemptRecord) {
    let store = hangar_testkit::shared_store();
    let id = SandboxId::new(attempt.sandbox.clone().expect("sandbox recorded")).unwrap();
    hangar_testkit::assert_no_traces(&hangar_testkit::host(&store), &id);
}

/// The tree a checkout has after applying: `git add -A` into a scratch index.
fn tree_of(dir: &Path) -> String {
    let index = dir.join(".git/hangar-test-index");
    let out = Command::new("sh")
        .current_dir(dir)
        .env("GIT_INDEX_FILE", &index)
        .args(["-c", "git read-tree HEAD && git add -A && git write-tree"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(index);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Applies the attempt's diff to a fresh clone of `origin` at the base commit and checks
/// the clone then holds exactly the tree the sandbox ended with.
async fn apply_round_trip(engine: &Engine, task: &TaskRecord, a: &AttemptRecord, origin: &Path) {
    let clone = tempfile::tempdir().unwrap();
    git(
        clone.path(),
        &["clone", "-q", origin.to_str().unwrap(), "."],
    );
    git(
        clone.path(),
        &["checkout", "-q", a.base_commit.as_deref().unwrap()],
    );
    let diff = engine
        .diff(&common::handle(engine, &task.id).await, a.index)
        .await
        .unwrap()
        .unwrap();
    let report = hangar_engine::apply_patch(clone.path(), &diff).expect("apply");
    assert!(!report.merged);
    assert_eq!(
        tree_of(clone.path()),
        a.result_tree.clone().unwrap(),
        "the applied clone differs from the sandbox's tree"
    );
}

#[tokio::test]
async fn example_task_fixes_the_test_and_applies_to_a_fresh_clone() {
    let engine = engine().await;
    let name = format!("pyfix-{}", TaskId::random());
    let example = hangar_testkit::example_env("pyfix", &name);
    let origin = &example.repo;
    // The example's file names its repository as `..`, relative to .hangar/.
    let rec = engine
        .create_env("environment.toml", &example.source, &example.dir)
        .await
        .unwrap();
    assert_eq!(Path::new(&rec.repo), origin.path().canonicalize().unwrap());

    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let progress: Progress = Arc::new(move |e: &Event| {
        let text = match e {
            Event::PhaseStarted { phase, .. } => format!("start {phase}"),
            Event::PhaseFinished { phase, ok, .. } => format!("end {phase} {ok}"),
            Event::Line(l) => format!("{} {}", l.phase, l.line),
        };
        seen.lock().unwrap().push(text);
    });
    let task = engine
        .submit(&request(&name, "Fix the failing test"))
        .await
        .unwrap();
    assert_eq!(task.status, TaskStatus::Pending);
    let (_tx, rx) = watch::channel(false);
    let task = engine.run_task(&task.id, progress, rx).await.unwrap();
    let a = engine
        .attempts(&common::handle(&engine, &task.id).await)
        .await
        .unwrap()
        .remove(0);
    no_traces(&a);
    assert_eq!(task.status, TaskStatus::Ready, "{:?}", a.error);
    assert_eq!(
        a.final_message.as_deref(),
        Some("Fixed add() in calc.py: it subtracted instead of adding; the tests pass.")
    );
    let s = a.summary.unwrap();
    assert_eq!((s.files_changed, s.lines_added, s.lines_removed), (1, 1, 1));
    let phases: Vec<Phase> = a.phases.iter().map(|p| p.phase).collect();
    assert_eq!(
        phases,
        [
            Phase::Prepare,
            Phase::Setup,
            Phase::Checkout,
            Phase::Maintenance,
            Phase::Agent,
            Phase::Collect
        ]
    );
    let seen = lines.lock().unwrap().clone();
    assert!(
        seen.contains(&"maintenance FAILED (failures=1)".to_string()),
        "{seen:?}"
    );
    assert!(seen.contains(&"end agent true".to_string()), "{seen:?}");
    let diff = String::from_utf8(
        engine
            .diff(&common::handle(&engine, &task.id).await, 1)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        diff.contains("-    return a - b\n+    return a + b\n"),
        "{diff}"
    );
    apply_round_trip(&engine, &task, &a, origin.path()).await;
}

#[tokio::test]
async fn diff_covers_new_deleted_renamed_binary_mode_and_symlink_changes() {
    let engine = engine().await;
    let big: String = (0..50).map(|i| format!("line {i}\n")).collect();
    let origin = repo(&[
        ("keep.txt", b"keep\n"),
        ("gone.txt", b"to be deleted\n"),
        ("old-name.txt", big.as_bytes()),
        ("tool.sh", b"#!/bin/sh\necho tool\n"),
        ("image.bin", &[0, 1, 2, 3, 255, 254, 0, 7]),
        ("link", b"placeholder"),
    ]);
    let name = env(
        &engine,
        origin.path(),
        &agent(
            r#"echo new > new.txt
rm gone.txt
mv old-name.txt new-name.txt
chmod +x tool.sh
printf '\x00\x01\x02\x09\xff' > image.bin
printf '\x00binary\x00' > fresh.bin
rm link && ln -s keep.txt link
mkdir -p 'sub dir' && echo accented > 'sub dir/café.txt'
echo "done""#,
        ),
    )
    .await;
    let (task, a) = run(&engine, request(&name, "change everything")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    let diff = String::from_utf8_lossy(
        &engine
            .diff(&common::handle(&engine, &task.id).await, 1)
            .await
            .unwrap()
            .unwrap(),
    )
    .into_owned();
    for want in [
        "new file mode 100644",
        "deleted file mode 100644",
        "rename from old-name.txt\nrename to new-name.txt",
        "old mode 100644\nnew mode 100755",
        "GIT binary patch",
        "new file mode 120000",
        "\"b/sub dir/caf\\303\\251.txt\"",
    ] {
        assert!(diff.contains(want), "diff lacks {want:?}:\n{diff}");
    }
    assert_eq!(a.summary.unwrap().files_changed, 8, "{diff}");
    apply_round_trip(&engine, &task, &a, origin.path()).await;
}

/// The paths an attempt's diff names.
async fn diff_paths(engine: &Engine, task: &TaskRecord) -> Vec<String> {
    let diff = engine
        .diff(&common::handle(engine, &task.id).await, 1)
        .await
        .unwrap()
        .unwrap_or_default();
    hangar_engine::diff::patch_paths(&diff).unwrap()
}

/// Regression: a Node project without a `.gitignore` for `node_modules` gave a diff of
/// every file setup installed, and `apply` wrote them into the user's checkout.
#[tokio::test]
async fn the_diff_holds_the_agents_work_and_not_what_setup_or_maintenance_left() {
    let engine = engine().await;
    let origin = repo(&[
        ("tracked.txt", b"base\n"),
        ("gone.txt", b"to be deleted\n"),
        ("src/lib.txt", b"lib\n"),
    ]);
    let extra = r#"[setup]
script = '''
mkdir -p node_modules/dep build
for i in $(seq 1 40); do echo "module $i" > node_modules/dep/m$i.js; done
echo object > build/out.o
'''
[maintenance]
script = '''
mkdir -p .venv/bin && echo python > .venv/bin/python
echo maintained >> src/lib.txt
'''
[agent]
script = '''
echo agent >> tracked.txt
echo new > new.txt
rm gone.txt build/out.o
echo "$(ls node_modules/dep | wc -l) modules, $(wc -l < src/lib.txt) lib lines"
'''
"#;
    let name = env(&engine, origin.path(), extra).await;
    let (task, a) = run(&engine, request(&name, "change three files")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    // The agent saw everything setup and maintenance made...
    assert_eq!(a.final_message.as_deref(), Some("40 modules, 2 lib lines"));
    // ...and its diff holds only its own work: not the modules, the build output or the
    // venv, nor maintenance's change to a tracked file; deleting setup's file changes
    // nothing in the base.
    assert_eq!(
        diff_paths(&engine, &task).await,
        ["gone.txt", "new.txt", "tracked.txt"]
    );
    let s = a.summary.unwrap();
    assert_eq!((s.files_changed, s.lines_added, s.lines_removed), (3, 2, 1));
    apply_round_trip(&engine, &task, &a, origin.path()).await;
}

/// Regression: test suites that assume a non-root user (a test expecting a permission
/// error) failed, since the agent and the check ran as root.
#[tokio::test]
async fn the_agent_and_the_check_run_as_the_environments_user() {
    let engine = engine().await;
    let origin = repo(&[("README", b"hi\n")]);
    let extra = r#"[setup]
script = '''
whoami > /tmp/setup-user
echo cache > ~/setup-cache
echo 'export FROM_BASHRC=yes' >> ~/.bashrc
'''
[maintenance]
script = '''
echo maintained > maint.txt
'''
[agent]
user = "dev"
check = '''test "$(id -un)" = dev && ! touch /etc/hangar-probe'''
script = '''
{ id -un; echo "$HOME"; cat ~/setup-cache; echo "${FROM_BASHRC:-no}"; cat /tmp/setup-user; } > who.txt
echo agent >> maint.txt
if touch /etc/hangar-probe 2>/dev/null; then echo root; else echo unprivileged; fi
'''
"#;
    let name = env(&engine, origin.path(), extra).await;
    // The first builds the snapshot, the second starts from it.
    for round in ["miss", "hit"] {
        let (task, a) = run(&engine, request(&name, "who am I")).await;
        let logs = common::logs(&engine, &task.id).await;
        assert_eq!(
            a.status,
            AttemptStatus::Ready,
            "{round}: {:?}\n{logs:#?}",
            a.error
        );
        assert_eq!(common::cache_of(&a).status.as_str(), round);
        assert_eq!(
            a.final_message.as_deref(),
            Some("unprivileged"),
            "{logs:#?}"
        );
        let diff = common::diff(&engine, &task.id, 1).await;
        // Setup ran as root, in the user's home; the agent as the user, with its bashrc.
        assert!(
            diff.contains("+dev\n+/home/dev\n+cache\n+yes\n+root\n"),
            "{round}: {diff}"
        );
        // A file maintenance (root) made is the user's to change.
        assert!(diff.contains("+maintained\n+agent\n"), "{round}: {diff}");
        assert!(
            a.check.as_ref().is_some_and(|c| c.passed),
            "{round}: {:?}\n{logs:#?}",
            a.check
        );
    }
}

/// Regression: a version of Node or uv other than the image's could not be had; now
/// `[toolchains]` installs it from the registry that serves it, in the snapshot.
#[tokio::test]
async fn toolchains_come_from_their_registries_into_every_phase() {
    let engine = engine().await;
    let origin = repo(&[("README", b"hi\n")]);
    let extra = r#"[toolchains]
node = "24.16.0"
uv = "0.13.9"
[maintenance]
script = "node --version > /tmp/maintenance-saw"
[agent]
script = '''
echo "$(cat /tmp/maintenance-saw) $(npm --version) $(uv --version | cut -d' ' -f1-2)"
'''
"#;
    let name = env(&engine, origin.path(), extra).await;
    let (task, a) = run(&engine, request(&name, "versions")).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}\n{logs:#?}", a.error);
    assert_eq!(
        a.final_message.as_deref(),
        Some("v24.16.0 11.19.1 uv 0.13.9"),
        "{logs:#?}"
    );
}

/// Regression: editing the repository's `.hangar/environment.toml` had no effect until
/// `env update`; an environment made with `follow = true` takes it at the default branch's
/// tip, except what only its owner may change.
#[tokio::test]
async fn an_environment_follows_its_repositorys_file_but_not_its_owners_parts() {
    let engine = engine().await;
    let name = format!("follow-{}", TaskId::random());
    let file = |setup: &str, network: &str| {
        format!(
            "name = \"{name}\"\nrepo = \"..\"\nfollow = true\n[setup]\nscript = \"{setup}\"\n\
             {network}[agent]\nscript = \"cat /tmp/built-by\"\n"
        )
    };
    let origin = repo(&[(
        ".hangar/environment.toml",
        file("echo v1 > /tmp/built-by", "").as_bytes(),
    )]);
    let dir = origin.path().join(".hangar");
    engine
        .create_env(
            "environment.toml",
            &file("echo v1 > /tmp/built-by", ""),
            &dir,
        )
        .await
        .unwrap();
    let (_, a) = run(&engine, request(&name, "which setup")).await;
    assert_eq!(a.final_message.as_deref(), Some("v1"), "{:?}", a.error);

    let commit = |text: String| {
        std::fs::write(dir.join("environment.toml"), text).unwrap();
        git(origin.path(), &["commit", "-qam", "change the environment"]);
    };
    commit(file("echo v2 > /tmp/built-by", ""));
    let (task, b) = run(&engine, request(&name, "which setup")).await;
    assert_eq!(b.final_message.as_deref(), Some("v2"), "{:?}", b.error);
    assert_eq!(task.environment_version, 2);
    let cache = common::cache_of(&b);
    assert_eq!(cache.status.as_str(), "miss");
    assert!(
        cache.reason.contains("setup script changed"),
        "{}",
        cache.reason
    );

    // Opening the agent's network is the owner's to do.
    commit(file(
        "echo v2 > /tmp/built-by",
        "[network.agent]\naccess = \"unrestricted\"\n",
    ));
    let e = engine
        .submit(&request(&name, "which setup"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "changes [network], which an environment follows from its repository only \
             through `hangar env update {name}`"
        )),
        "{e}"
    );
    assert_eq!(engine.env(&name).await.unwrap().0.version, 2);
}

#[tokio::test]
async fn an_oversized_diff_is_refused_naming_its_largest_files() {
    let engine = engine().await;
    let origin = repo(&[("README", b"hi\n")]);
    let extra = r#"[agent]
max_diff = "64KiB"
script = '''
head -c 300000 /dev/urandom > big.bin
seq 1 30000 > numbers.txt
echo small > small.txt
echo wrote three files
'''
"#;
    let name = env(&engine, origin.path(), extra).await;
    let (task, a) = run(&engine, request(&name, "write too much")).await;
    assert_eq!(a.status, AttemptStatus::Error);
    let error = a.error.clone().unwrap();
    assert!(
        error.contains("over the limit of 64KiB (`[agent] max_diff`), and is not kept"),
        "{error}"
    );
    assert!(
        error.contains("its largest files: big.bin (") && error.contains("), numbers.txt ("),
        "{error}"
    );
    assert_eq!(a.final_message.as_deref(), Some("wrote three files"));
    assert_eq!(
        engine
            .diff(&common::handle(&engine, &task.id).await, 1)
            .await
            .unwrap(),
        None
    );
    let logs = common::logs(&engine, &task.id).await;
    assert!(
        logs.iter()
            .any(|l| l.contains("its largest files: big.bin")),
        "{logs:#?}"
    );
}

#[tokio::test]
async fn setup_failure_names_the_line_the_exit_code_and_keeps_the_output() {
    let engine = engine().await;
    let origin = repo(&[("README", b"x\n")]);
    let name = env(
        &engine,
        origin.path(),
        &format!(
            "[setup]\nscript = '''\necho preparing\necho 'about to fail' >&2\nls /no/such/dir\necho never\n'''\n{}",
            agent("echo agent ran")
        ),
    )
    .await;
    let (task, a) = run(&engine, request(&name, "anything")).await;
    assert_eq!(task.status, TaskStatus::Error);
    assert_eq!(
        a.error.as_deref(),
        Some("the setup script failed at line 3 (`ls /no/such/dir`) with exit code 2")
    );
    assert_eq!(a.exit_code, Some(2));
    assert!(a.summary.is_none());
    let logs = engine
        .logs(&common::handle(&engine, &task.id).await, Some(1))
        .await
        .unwrap();
    let text: Vec<_> = logs
        .iter()
        .map(|l| (l.phase, l.stream, l.line.as_str()))
        .collect();
    assert!(
        text.contains(&(Phase::Setup, Stream::Stdout, "preparing")),
        "{text:?}"
    );
    assert!(
        text.contains(&(Phase::Setup, Stream::Stderr, "about to fail")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|(_, s, l)| *s == Stream::Stderr && l.contains("No such file or directory")),
        "{text:?}"
    );
    assert!(!text
        .iter()
        .any(|(_, _, l)| *l == "never" || *l == "agent ran"));
}

#[tokio::test]
async fn bashrc_lines_reach_later_phases_and_plain_exports_do_not() {
    let engine = engine().await;
    let origin = repo(&[("README", b"x\n")]);
    let name = env(
        &engine,
        origin.path(),
        &format!(
            "[env]\nFROM_ENV = \"everywhere\"\n\n[setup]\nscript = '''\nexport PLAIN=set-in-setup\necho 'export FROM_BASHRC=yes' >> ~/.bashrc\necho \"setup sees $FROM_ENV\" > /tmp/setup-saw\n'''\n\n[maintenance]\nscript = 'echo \"maintenance sees ${{FROM_BASHRC:-nothing}}\"'\n{}",
            agent("cat /tmp/setup-saw\necho \"plain=${PLAIN:-unset} bashrc=${FROM_BASHRC:-unset} env=$FROM_ENV phase=$HANGAR_PHASE\"")
        ),
    )
    .await;
    let (task, a) = run(&engine, request(&name, "report")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    assert_eq!(
        a.final_message.as_deref(),
        Some("plain=unset bashrc=yes env=everywhere phase=agent")
    );
    let logs = engine
        .logs(&common::handle(&engine, &task.id).await, None)
        .await
        .unwrap();
    let lines: Vec<_> = logs.iter().map(|l| l.line.as_str()).collect();
    assert!(lines.contains(&"setup sees everywhere"), "{lines:?}");
    assert!(lines.contains(&"maintenance sees yes"), "{lines:?}");
}

#[tokio::test]
async fn tasks_check_out_a_branch_or_a_commit_after_setup() {
    let engine = engine().await;
    let origin = repo(&[("file.txt", b"main\n")]);
    let main_sha = git(origin.path(), &["rev-parse", "HEAD"]);
    git(origin.path(), &["checkout", "-q", "-b", "feature"]);
    std::fs::write(origin.path().join("file.txt"), "feature\n").unwrap();
    git(origin.path(), &["commit", "-qam", "feature"]);
    let feature_sha = git(origin.path(), &["rev-parse", "HEAD"]);
    git(origin.path(), &["checkout", "-q", "main"]);
    std::fs::write(origin.path().join("file.txt"), "main two\n").unwrap();
    git(origin.path(), &["commit", "-qam", "main two"]);
    let name = env(
        &engine,
        origin.path(),
        &format!(
            "[setup]\nscript = 'cat file.txt > /tmp/setup-saw'\n{}",
            agent("echo \"$(cat /tmp/setup-saw) then $(cat file.txt)\"")
        ),
    )
    .await;

    let (_, a) = run(
        &engine,
        TaskRequest {
            branch: Some("feature".into()),
            ..request(&name, "on a branch")
        },
    )
    .await;
    assert_eq!(a.base_commit.as_deref(), Some(feature_sha.as_str()));
    assert_eq!(a.final_message.as_deref(), Some("main two then feature"));

    let (_, a) = run(
        &engine,
        TaskRequest {
            commit: Some(main_sha[..10].to_string()),
            ..request(&name, "at a commit")
        },
    )
    .await;
    assert_eq!(a.base_commit.as_deref(), Some(main_sha.as_str()));
    assert_eq!(a.final_message.as_deref(), Some("main two then main"));

    let (task, a) = run(
        &engine,
        TaskRequest {
            branch: Some("nope".into()),
            ..request(&name, "missing branch")
        },
    )
    .await;
    assert_eq!(task.status, TaskStatus::Error);
    assert_eq!(
        a.error.as_deref(),
        Some(
            "failed to check out the task's branch or commit: branch nope is not in the repository"
        )
    );
    let err = engine
        .submit(&TaskRequest {
            branch: Some("a..b".into()),
            ..request(&name, "bad")
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`a..b` is not a valid branch name"),
        "{err}"
    );
}

#[tokio::test]
async fn agent_failures_timeouts_and_missing_tools_are_reported() {
    let engine = engine().await;
    let origin = repo(&[("README", b"x\n")]);

    let name = env(
        &engine,
        origin.path(),
        &agent("echo partial > work.txt\nexit 3"),
    )
    .await;
    let (task, a) = run(&engine, request(&name, "fail")).await;
    assert_eq!(task.status, TaskStatus::Error);
    assert_eq!(a.exit_code, Some(3));
    assert_eq!(
        a.error.as_deref(),
        Some("the agent script failed with exit code 3")
    );
    assert_eq!(
        a.summary.unwrap().files_changed,
        1,
        "partial work is collected"
    );

    let name = env(
        &engine,
        origin.path(),
        "[agent]\nscript = 'echo started; sleep 600'\ntimeout = \"2s\"\n",
    )
    .await;
    let (task, a) = run(&engine, request(&name, "hang")).await;
    assert_eq!(task.status, TaskStatus::Error);
    assert_eq!(
        a.error.as_deref(),
        Some("the agent script did not finish within 2s and was stopped")
    );

    let with_lock = repo(&[("Cargo.toml", b"[package]\n"), ("Cargo.lock", b"")]);
    let name = env(&engine, with_lock.path(), &agent("echo hi")).await;
    let (task, a) = run(&engine, request(&name, "install")).await;
    let said = "Cargo.lock calls for `cargo`, which the image lacks: use the default image \
                (leave out `image`), build an image with it (hangar image build NAME --from \
                debian-trixie -p PKG...; cargo: Debian's `cargo` package), give the command \
                that installs it first ([setup.install.cargo] command = \"...\"), or set \
                [setup] auto_install = false";
    assert_eq!(
        a.error.as_deref(),
        Some(format!("failed to auto-install: {said}").as_str())
    );
    let logs = engine
        .logs(&common::handle(&engine, &task.id).await, Some(1))
        .await
        .unwrap();
    let lines: Vec<_> = logs.iter().map(|l| l.line.as_str()).collect();
    assert!(lines.contains(&said), "{lines:?}");

    // A command of the environment's own runs instead, unprobed: it may bring the tool.
    let name = env(
        &engine,
        with_lock.path(),
        &format!(
            "[setup.install.cargo]\ncommand = \"echo fetched by my own command\"\n{}",
            agent("echo hi")
        ),
    )
    .await;
    let (task, a) = run(&engine, request(&name, "install")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    let logs = common::logs(&engine, &task.id).await;
    assert!(
        logs.contains(&"fetched by my own command".to_string()),
        "{logs:#?}"
    );
}

#[tokio::test]
async fn cancelling_a_task_stops_the_agent_and_tears_down() {
    let engine = engine().await;
    let origin = repo(&[("README", b"x\n")]);
    let name = env(&engine, origin.path(), &agent("echo waiting\nsleep 600")).await;
    let task = engine.submit(&request(&name, "wait")).await.unwrap();
    let (tx, rx) = watch::channel(false);
    let progress: Progress = Arc::new(move |e: &Event| {
        if let Event::Line(l) = e {
            if l.phase == Phase::Agent && l.line == "waiting" {
                let _ = tx.send(true);
            }
        }
    });
    let task = engine.run_task(&task.id, progress, rx).await.unwrap();
    assert_eq!(task.status, TaskStatus::Cancelled);
    let a = engine
        .attempts(&common::handle(&engine, &task.id).await)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(a.status, AttemptStatus::Cancelled);
    no_traces(&a);
}

/// A source repository whose config and hooks would write markers on the host, and an
/// agent that plants the same in the workspace before collect: no marker may appear.
#[tokio::test]
async fn repository_controlled_git_config_never_runs_on_the_host() {
    let engine = engine().await;
    let markers = tempfile::tempdir().unwrap();
    let m = |name: &str| markers.path().join(name).display().to_string();
    let origin = repo(&[
        ("README", b"x\n"),
        (".gitattributes", b"* filter=evil diff=evil\n"),
    ]);
    let o = origin.path();
    for (key, command) in [
        ("core.fsmonitor", format!("touch {}", m("fsmonitor"))),
        ("filter.evil.clean", format!("touch {}; cat", m("clean"))),
        ("filter.evil.smudge", format!("touch {}; cat", m("smudge"))),
        ("diff.evil.command", format!("touch {}", m("diff"))),
        (
            "uploadpack.packObjectsHook",
            format!("touch {}", m("packhook")),
        ),
    ] {
        git(o, &["config", key, &command]);
    }
    for hook in [
        "post-checkout",
        "pre-upload-pack",
        "reference-transaction",
        "post-update",
    ] {
        let path = o.join(".git/hooks").join(hook);
        std::fs::write(&path, format!("#!/bin/sh\ntouch {}\n", m(hook))).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    }
    let plant = format!(
        "git config core.fsmonitor 'touch {fs}'\n\
         git config diff.external 'touch {ext}'\n\
         printf '#!/bin/sh\\ntouch {hook}\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit\n\
         echo changed >> README\n\
         echo planted",
        fs = m("agent-fsmonitor"),
        ext = m("agent-external"),
        hook = m("agent-hook"),
    );
    let name = env(&engine, o, &agent(&plant)).await;
    let (task, a) = run(&engine, request(&name, "poison git")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    // Again, so that the mirror is fetched (not cloned) too.
    let (_, again) = run(&engine, request(&name, "poison git again")).await;
    assert_eq!(again.status, AttemptStatus::Ready, "{:?}", again.error);
    let left: Vec<_> = std::fs::read_dir(markers.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "repository code ran on the host: {left:?}");
    let diff = String::from_utf8_lossy(
        &engine
            .diff(&common::handle(&engine, &task.id).await, 1)
            .await
            .unwrap()
            .unwrap(),
    )
    .into_owned();
    assert!(diff.contains("+changed"), "{diff}");
}

#[tokio::test]
async fn environments_resolve_update_and_refuse_bad_input_without_losing_anything() {
    let engine = engine().await;
    let origin = repo(&[("README", b"x\n")]);
    let name = env(&engine, origin.path(), &agent("true")).await;
    let (before, _) = engine.env(&name).await.unwrap();
    let repo_tail = {
        let p = origin.path().canonicalize().unwrap();
        let parts: Vec<_> = p.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        parts[parts.len() - 2..].join("/")
    };
    let found = engine.resolve_env(&repo_tail).await.unwrap();
    assert!(found.iter().any(|e| e.name == name), "{found:?}");

    let bad = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n[agent]\ntimeout = \"soon\"\n",
        origin.path().display()
    );
    let err = engine
        .update_env(&name, "bad.toml", &bad, origin.path())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad.toml:5: `agent.timeout`: `soon` is not a duration (use e.g. 90s, 30m, 1h30m, 12h)"
    );
    let (after, _) = engine.env(&name).await.unwrap();
    assert_eq!(
        after, before,
        "a refused update changed the stored environment"
    );

    let other = bad.replace(&name, "someone-else");
    let err = engine
        .update_env(
            &name,
            "other.toml",
            &other.replace("soon", "1m"),
            origin.path(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("describes environment `someone-else`"),
        "{err}"
    );

    let good = bad.replace("soon", "10m");
    let updated = engine
        .update_env(&name, "good.toml", &good, origin.path())
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    let err = engine.submit(&request(&name, "go")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("has no [agent] script; give one with --script FILE"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_of_n_runs_attempts_side_by_side_and_ranks_them_by_check_then_size() {
    let engine = engine().await;
    let origin = repo(&[("README.md", b"read me\n")]);
    let script = r#"case "$HANGAR_ATTEMPT" in
  1) seq 1 30 > big.txt; echo bad > verdict ;;
  2) echo good > verdict ;;
  3) seq 1 30 > big.txt; echo good > verdict ;;
esac
echo "attempt $HANGAR_ATTEMPT done""#;
    let name = env(
        &engine,
        origin.path(),
        &format!("{}check = \"grep -q good verdict\"\n", agent(script)),
    )
    .await;

    let err = engine
        .submit(&TaskRequest {
            attempts: 5,
            ..request(&name, "too many")
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to start the task: 5 attempts asked for; a task runs at most 4"
    );

    let (task, _) = run(
        &engine,
        TaskRequest {
            attempts: 3,
            ..request(&name, "write a verdict")
        },
    )
    .await;
    assert_eq!(task.status, TaskStatus::Ready);
    let attempts = engine
        .attempts(&common::handle(&engine, &task.id).await)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 3);
    for a in &attempts {
        assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
        assert_eq!(
            a.final_message.as_deref(),
            Some(format!("attempt {} done", a.index).as_str())
        );
        no_traces(a);
    }
    let sandboxes: std::collections::BTreeSet<_> =
        attempts.iter().map(|a| a.sandbox.clone()).collect();
    assert_eq!(sandboxes.len(), 3, "each attempt has its own sandbox");
    // Side by side: every attempt had started before any had finished.
    let last_start = attempts.iter().filter_map(|a| a.started_ms).max().unwrap();
    let first_end = attempts.iter().filter_map(|a| a.finished_ms).min().unwrap();
    assert!(last_start <= first_end, "{attempts:#?}");

    let checks: Vec<Option<bool>> = attempts.iter().map(|a| a.check.map(|c| c.passed)).collect();
    assert_eq!(checks, [Some(false), Some(true), Some(true)]);
    for (idx, has_big) in [(1, true), (2, false), (3, true)] {
        let diff = common::diff(&engine, &task.id, idx).await;
        assert!(diff.contains("+++ b/verdict"), "{diff}");
        assert_eq!(
            diff.contains("+++ b/big.txt"),
            has_big,
            "attempt {idx}: {diff}"
        );
    }
    assert_eq!(hangar_engine::best::rank(&attempts), [2, 3, 1]);
    assert_eq!(hangar_engine::best::best(&attempts), Some(2));
    let logs = common::logs(&engine, &task.id).await;
    assert!(
        logs.contains(&"check: failed with exit code 1".to_string()),
        "{logs:#?}"
    );
    assert!(logs.contains(&"check: passed".to_string()), "{logs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_continues_from_the_attempt_it_names() {
    // The engine's clock, moved on at the end past the layer's TTL.
    let ahead = Arc::new(AtomicI64::new(0));
    let engine = common::open(EngineConfig {
        clock: {
            let ahead = ahead.clone();
            Arc::new(move || hangar_store::db::now_ms() + ahead.load(Ordering::SeqCst))
        },
        ..common::config()
    })
    .await;
    let repo = hangar_testkit::repo_with(&[("README", b"hi\n")]);
    // Each agent appends its prompt, and a file outside the repository shows the
    // follow-up's sandbox holds everything the first wrote.
    let name = env(
        &engine,
        repo.path(),
        &agent("echo \"$HANGAR_PROMPT\" >> notes.txt; echo \"$HANGAR_PROMPT\" >> /tmp/seen; paste -sd' ' /tmp/seen"),
    )
    .await;
    let (first, a) = run(&engine, common::request(&name, "first")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);

    let follow = |from: &str, prompt: &str| TaskRequest {
        from: Some(from.to_string()),
        ..common::request("", prompt)
    };
    let (second, b) = run(&engine, follow(&first.id.to_string()[..6], "second")).await;
    assert_eq!(b.status, AttemptStatus::Ready, "{:?}", b.error);
    assert_eq!(second.environment, name);
    assert_eq!(second.from, Some((first.id.clone(), 1)));
    let cache = common::cache_of(&b);
    assert_eq!(
        (cache.status.as_str(), cache.reason),
        ("from", format!("task {} attempt 1's layer", first.id))
    );
    assert_eq!(b.base_commit, a.base_commit, "diffed against the same base");
    assert_eq!(b.final_message.as_deref(), Some("first second"));
    let d = common::diff(&engine, &second.id, 1).await;
    assert!(d.contains("+first\n+second\n"), "{d}");

    // A follow-up of a follow-up stands on both.
    let (third, c) = run(&engine, follow(&format!("{}:1", second.id), "third")).await;
    assert_eq!(c.final_message.as_deref(), Some("first second third"));
    assert!(common::diff(&engine, &third.id, 1)
        .await
        .contains("+first\n+second\n+third\n"));

    // Refused, naming why, and storing nothing (a follow-up is stored in its source's
    // environment).
    let stored = || {
        let engine = &engine;
        let filter = TaskFilter {
            environment: Some(name.clone()),
            limit: 100,
            ..TaskFilter::default()
        };
        async move { engine.tasks(&filter).await.unwrap().tasks.len() }
    };
    let before = stored().await;
    let refused = |req: TaskRequest| {
        let engine = &engine;
        async move { engine.submit(&req).await.unwrap_err().to_string() }
    };
    let e = refused(follow(&format!("{}:7", first.id), "x")).await;
    assert!(
        e.contains(&format!("task {} has no attempt 7 (1 attempts)", first.id)),
        "{e}"
    );
    let e = refused(TaskRequest {
        branch: Some("main".into()),
        ..follow(&first.id.to_string(), "x")
    })
    .await;
    assert!(
        e.contains("a follow-up continues on its source's checkout"),
        "{e}"
    );
    let other = env(&engine, repo.path(), &agent("true")).await;
    let e = refused(TaskRequest {
        environment: other.clone(),
        ..follow(&first.id.to_string(), "x")
    })
    .await;
    assert!(
        e.contains(&format!("runs in its environment `{name}`, not `{other}`")),
        "{e}"
    );
    let e = refused(follow("ffffffffffff", "x")).await;
    assert!(e.contains("failed to find task `ffffffffffff`"), "{e}");
    assert_eq!(stored().await, before);

    // Past the environment's cache TTL (12 h by default) the layer is not offered.
    ahead.store(13 * 3600 * 1000, Ordering::SeqCst);
    let e = engine
        .submit(&follow(&first.id.to_string(), "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no kept layer: it expired"), "{e}");
}
