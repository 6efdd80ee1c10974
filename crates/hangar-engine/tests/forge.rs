//! Pull requests from real attempts: the diff committed on the host's mirror and pushed
//! to a real git server over HTTP with the forge's token, the pull request opened on a
//! GitHub that answers as GitHub's OpenAPI description says, found again on a second
//! ask; a repository on no forge gets the branch alone; and an agent that plants hooks,
//! filters and fsmonitor in its workspace and its diff runs nothing on the host.

use std::path::Path;

use hangar_engine::{Engine, EngineError, PullOptions};
use hangar_secrets::Secret;
use hangar_spec::{AttemptStatus, TaskId};
use hangar_store::Bucket;
use hangar_testkit::githttp::GitHttp;
use hangar_testkit::github::FakeGitHub;
use hangar_testkit::repo_with;

mod common;
use common::{engine, request};

const TOKEN: &str = "ghs_forgeTestToken1234567890";

/// An agent that changes a file, adds one, and plants what would run code on a host
/// that ran git in its checkout: hooks, an fsmonitor and a filter in its workspace's
/// `.git`, and attributes naming drivers in its diff.
fn hostile_agent(marker: &Path) -> String {
    let m = marker.display();
    format!(
        "[agent]\nscript = '''\n\
         printf 'print(\"fixed\")\\n' > app.py\n\
         printf 'notes\\n' > NOTES.md\n\
         printf '* filter=pwn diff=pwn merge=pwn\\n' > .gitattributes\n\
         git config core.fsmonitor 'touch {m}'\n\
         git config core.hooksPath .githooks\n\
         git config filter.pwn.clean 'touch {m}'\n\
         mkdir -p .githooks && printf '#!/bin/sh\\ntouch {m}\\n' > .githooks/pre-push\n\
         chmod +x .githooks/pre-push\n\
         for h in pre-commit post-commit pre-push reference-transaction; do\n\
           printf '#!/bin/sh\\ntouch {m}\\n' > .git/hooks/$h; chmod +x .git/hooks/$h\n\
         done\n\
         '''\n"
    )
}

/// A bare repository `name` under `root` holding `files` on main.
fn origin(root: &Path, name: &str, files: &[(&str, &[u8])]) {
    hangar_testkit::githttp::publish(repo_with(files).path(), root, name);
}

async fn env(engine: &Engine, source: &str, dir: &Path) -> String {
    engine
        .create_env("forge.toml", source, dir)
        .await
        .expect("create the environment");
    source
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

/// Every file under `dir`, read, holding `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                if let Ok(data) = std::fs::read(&p) {
                    if data.windows(needle.len()).any(|w| w == needle) {
                        out.push(p.display().to_string());
                    }
                }
            }
        }
    }
    out
}

fn ls_tree(repo: &Path, rev: &str) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["ls-tree", "-r", "--full-tree", rev])
        .output()
        .unwrap();
    assert!(out.status.success(), "ls-tree {rev}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_is_opened_from_the_attempts_commit_and_found_again() {
    let engine = engine().await;
    let served = tempfile::tempdir().unwrap();
    origin(
        served.path(),
        "app.git",
        &[("app.py", b"print('broken')\n"), ("README.md", b"app\n")],
    );
    let server = GitHttp::serve(served.path(), Some(("x-access-token", TOKEN)));
    let github = FakeGitHub::start();
    let marker = tempfile::tempdir().unwrap().keep().join("ran-on-the-host");
    let name = format!("pr-{}", TaskId::random());
    let source = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [secrets.GH]\n\
         [forge]\nkind = \"github\"\nrepository = \"octocat/Hello-World\"\napi = \"{}\"\n\
         token = \"GH\"\nauthor = \"hangar bot <bot@hangar.test>\"\n{}",
        server.url("app.git"),
        github.api(),
        hostile_agent(&marker)
    );
    let name_again = env(&engine, &source, served.path()).await;
    assert_eq!(name, name_again);
    engine
        .secret_set(&name, "GH", &Secret::new(TOKEN.into()).unwrap())
        .await
        .unwrap();

    let (task, attempt) = common::run(&engine, &request(&name, "Fix the app")).await;
    assert_eq!(attempt.status, AttemptStatus::Ready, "{:?}", attempt.error);
    let handle = common::handle(&engine, &task.id).await;
    // The forge refuses first (its own 403): a clear error; the branch is pushed and
    // recorded, and the next ask opens the pull request from it.
    github.answer_next("pulls/create", 403, None, &[]);
    let e = engine
        .open_pull(&handle, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the forge answered 403"), "{e}");
    assert!(!e.to_string().contains(TOKEN));
    let pushed = engine.pull_requests(&handle).await.unwrap();
    assert_eq!((pushed.len(), pushed[0].number), (1, None));
    let pulled = engine
        .open_pull(&handle, &PullOptions::default())
        .await
        .expect("open the pull request");
    assert!(pulled.new && pulled.forge);
    assert_eq!(pulled.record.commit, pushed[0].commit);
    let rec = &pulled.record;
    assert_eq!(rec.base, "main");
    assert_eq!(rec.branch, format!("hangar/{}-1", &task.id.as_str()[..8]));
    let example = github.example("pulls/create", 201);
    assert_eq!(rec.number, example["number"].as_u64());
    assert_eq!(rec.url.as_deref(), example["html_url"].as_str());

    // The branch on the server holds exactly the attempt's tree, by hangar's identity.
    let bare = served.path().join("app.git");
    assert_eq!(
        ls_tree(&bare, &rec.branch),
        ls_tree(&bare, attempt.result_tree.as_deref().unwrap_or("missing")),
        "the pushed commit's tree is the attempt's"
    );
    let who = std::process::Command::new("git")
        .arg("-C")
        .arg(&bare)
        .args([
            "log",
            "-1",
            "--format=%an <%ae>|%cn <%ce>|%P|%s",
            &rec.branch,
        ])
        .output()
        .unwrap();
    let who = String::from_utf8_lossy(&who.stdout).trim().to_string();
    assert_eq!(
        who,
        format!(
            "hangar bot <bot@hangar.test>|hangar bot <bot@hangar.test>|{}|Fix the app",
            attempt.base_commit.as_deref().unwrap()
        )
    );

    // Every request was one GitHub's description has, with the token as a bearer.
    assert_eq!(github.violations(), Vec::<String>::new());
    let requests = github.requests();
    let ops: Vec<&str> = requests.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        ops,
        ["pulls/list", "pulls/create", "pulls/list", "pulls/create"]
    );
    let create = &requests[3];
    assert_eq!(create.path, "/repos/octocat/Hello-World/pulls");
    assert_eq!(create.body["head"], rec.branch.as_str());
    assert_eq!(create.body["base"], "main");
    assert_eq!(create.body["title"], "Fix the app");
    let body = create.body["body"].as_str().unwrap();
    assert!(
        body.contains("Fix the app") && body.contains(task.id.as_str()),
        "{body}"
    );
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    // git got the token through its environment, as Basic credentials for the server.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    );
    assert!(server.authorizations().contains(&basic));
    // And it is in no file of the mirrors (their config, their objects) or the database.
    let store = hangar_testkit::shared_store();
    let mut holding = files_holding(&store.path(Bucket::Mirrors), TOKEN.as_bytes());
    for db_file in ["hangar.db", "hangar.db-wal"] {
        let path = store.root().join(db_file);
        if std::fs::read(&path).is_ok_and(|d| d.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()))
        {
            holding.push(path.display().to_string());
        }
    }
    assert_eq!(holding, Vec::<String>::new());
    // Nothing the agent planted ran on the host.
    assert!(
        !marker.exists(),
        "a planted hook, filter or fsmonitor ran on the host"
    );

    // The same attempt again: the same pull request, and nothing sent.
    let again = engine
        .open_pull(&handle, &PullOptions::default())
        .await
        .unwrap();
    assert!(!again.new);
    assert_eq!(again.record, pulled.record);
    assert_eq!(github.requests().len(), 4);
    let listed = engine.pull_requests(&handle).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&pulled.record));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_on_no_forge_gets_the_branch_alone() {
    let engine = engine().await;
    let served = tempfile::tempdir().unwrap();
    origin(served.path(), "plain.git", &[("a.txt", b"one\n")]);
    let bare = served.path().join("plain.git");
    let name = format!("plain-{}", TaskId::random());
    let source = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [agent]\nscript = \"printf 'two\\\\n' > a.txt\"\n",
        bare.display()
    );
    env(&engine, &source, served.path()).await;
    let (task, attempt) = common::run(&engine, &request(&name, "two")).await;
    assert_eq!(attempt.status, AttemptStatus::Ready, "{:?}", attempt.error);
    let handle = common::handle(&engine, &task.id).await;

    // Onto the branch it proposes to: refused before anything runs.
    let onto_main = PullOptions {
        branch: Some("main".into()),
        ..PullOptions::default()
    };
    let e = engine.open_pull(&handle, &onto_main).await.unwrap_err();
    assert!(matches!(e, EngineError::PullBranch { .. }), "{e}");

    // The remote refuses a branch: a clear error with its reason, and nothing is lost.
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do case $ref in refs/heads/protected/*) \
         echo \"$ref is protected\" >&2; exit 1;; esac; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let protected = PullOptions {
        branch: Some("protected/two".into()),
        ..PullOptions::default()
    };
    let e = engine.open_pull(&handle, &protected).await.unwrap_err();
    assert!(matches!(e, EngineError::PushRejected { .. }), "{e}");
    assert!(e.to_string().contains("protected/two"), "{e}");
    assert!(engine.pull_requests(&handle).await.unwrap().is_empty());
    assert!(engine
        .diff(&handle, 1)
        .await
        .unwrap()
        .is_some_and(|d| !d.is_empty()));

    let opts = PullOptions {
        branch: Some("fix/two".into()),
        ..PullOptions::default()
    };
    let pulled = engine.open_pull(&handle, &opts).await.unwrap();
    assert!(pulled.new && !pulled.forge);
    assert_eq!(
        (pulled.record.number, pulled.record.url.as_deref()),
        (None, None)
    );
    let pushed = std::process::Command::new("git")
        .arg("-C")
        .arg(&bare)
        .args(["rev-parse", "fix/two"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pushed.stdout).trim(),
        pulled.record.commit
    );
    assert_eq!(
        ls_tree(&bare, "fix/two"),
        format!("100644 blob {}\ta.txt\n", blob_of(b"two\n"))
    );
    // The main branch is untouched.
    assert_eq!(
        ls_tree(&bare, "main"),
        format!("100644 blob {}\ta.txt\n", blob_of(b"one\n"))
    );
}

/// The id git gives a blob of `data`.
fn blob_of(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("git")
        .args(["hash-object", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
