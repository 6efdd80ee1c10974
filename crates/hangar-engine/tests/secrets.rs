//! Secrets in real sandboxes, attacked from the agent's side: the agent looks for a secret
//! in its environment, in every process's environ and in files, and finds only
//! placeholders; setup and maintenance get the values; whatever is stored is redacted; a
//! secret left in the snapshot or by maintenance is caught, or scrubbed on request.

use std::path::Path;

use hangar_engine::{Engine, TaskRequest};
use hangar_secrets::Secret;
use hangar_spec::TaskId;
use hangar_store::db::AttemptRecord;

mod common;

use common::{cache_of, engine};

fn secret(v: &str) -> Secret {
    Secret::new(v.as_bytes().to_vec()).unwrap()
}

/// A value nobody else uses, so a search for it finds only this test's traces.
fn fresh_value(tag: &str) -> String {
    format!("{tag}-{}-{}", TaskId::random(), TaskId::random())
}

/// The agent's hunt for `value` (split in two halves that the shell joins, so the script
/// text holds it in none of the forms the leak scan looks for: maintenance runs this
/// script too, and its file stays in the sandbox): its environment, every process's
/// environ, files where tools keep tokens.
fn hunter(value: &str) -> String {
    let (a, b) = value.split_at(value.len() / 2);
    format!(
        r#"V='{a}''{b}'
in_env=$(env | grep -cF "$V" || true)
in_procs=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -cF "$V" || true)
in_files=$(grep -rlF "$V" /root /home /tmp /opt /etc /workspace /var /usr/local /.hangar 2>/dev/null | wc -l)
echo "env=$in_env procs=$in_procs files=$in_files token=${{TOKEN:-unset}} gh=${{GH:0:19}}"
"#
    )
}

fn base64(value: &str) -> String {
    let b64 = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(value.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap()
        .stdout;
    String::from_utf8(b64).unwrap()
}

fn file(name: &str, repo: &Path, setup: &str, maintenance: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [setup]\nscript = '''\n{setup}\n'''\n{extra}\n\
         [maintenance]\nscript = '''\n{maintenance}\n'''\n\
         [secrets.TOKEN]\n\
         [secrets.GH]\ninject = {{ hosts = [\"api.github.com\"], header = \"Authorization\", format = \"Bearer {{}}\" }}\nphases = [\"agent\"]\n\
         [agent]\nscript = 'echo no agent script given'\n",
        repo.display()
    )
}

async fn run(engine: &Engine, env: &str, script: &str) -> (AttemptRecord, Vec<String>, TaskId) {
    let req = TaskRequest {
        script: Some(script.into()),
        ..common::request(env, "find the secret")
    };
    let (task, a) = common::run(engine, &req).await;
    (a, common::logs(engine, &task.id).await, task.id)
}

/// Creates the environment and sets its secrets: TOKEN to `token`, GH to a dummy.
async fn with_secrets(engine: &Engine, name: &str, source: &str, repo: &Path, token: &str) {
    engine.create_env("e.toml", source, repo).await.unwrap();
    engine
        .secret_set(name, "TOKEN", &secret(token))
        .await
        .unwrap();
    engine
        .secret_set(name, "GH", &secret("ghp-1234"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_agent_finds_no_secret_anywhere_and_nothing_stored_holds_one() {
    let engine = engine().await;
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let name = format!("secrets-{}", TaskId::random());
    let setup = "echo \"setup sees ${#TOKEN} chars\"\necho \"token is $TOKEN\"";
    let value = fresh_value("tok");
    // Maintenance runs the agent's hunt as a control (it must find the value), then
    // leaves a process holding the secret in its environment.
    let maintenance = format!(
        "echo \"maintenance sees ${{#TOKEN}} chars\"\n{}\n(setsid sleep 1000 </dev/null >/dev/null 2>&1 &)",
        hunter(&value).replace("echo \"env=", "echo \"control: env=")
    );
    let source = file(&name, origin.path(), setup, &maintenance, "");
    engine
        .create_env("e.toml", &source, origin.path())
        .await
        .unwrap();

    let err = engine
        .submit(&common::request(&name, "go"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to start the task: environment `{name}` declares secret `GH`, secret `TOKEN` without a value; set them with `hangar secret set {name} GH`, `hangar secret set {name} TOKEN`")
    );

    let gh = fresh_value("ghp");
    engine
        .secret_set(&name, "TOKEN", &secret(&value))
        .await
        .unwrap();
    engine.secret_set(&name, "GH", &secret(&gh)).await.unwrap();
    let err = engine
        .secret_set(&name, "UNDECLARED", &secret("abcd"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("declares no secret `UNDECLARED`"),
        "{err}"
    );

    let (a, logs, _) = run(&engine, &name, &hunter(&value)).await;
    assert_eq!(a.error, None, "{logs:?}");
    assert_eq!(
        a.final_message.as_deref(),
        Some("env=0 procs=0 files=0 token=unset gh=hangar-placeholder-")
    );
    let n = value.len();
    assert!(logs.contains(&format!("setup sees {n} chars")), "{logs:?}");
    assert!(
        logs.contains(&format!("maintenance sees {n} chars")),
        "{logs:?}"
    );
    assert!(
        logs.contains(&"token is [secret:TOKEN]".to_string()),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.starts_with("control: env=1 procs=")
            && l.ends_with("files=0 token=[secret:TOKEN] gh=")),
        "the same hunt finds the value where it is: {logs:?}"
    );
    assert!(!logs.iter().any(|l| l.contains(&value)));

    // The hunt again on a cache hit, then with a new value: the snapshot is rebuilt.
    let (a, _, _) = run(&engine, &name, &hunter(&value)).await;
    assert_eq!(cache_of(&a).status.as_str(), "hit");
    assert!(a
        .final_message
        .unwrap()
        .starts_with("env=0 procs=0 files=0"));
    let value2 = fresh_value("tok2");
    engine
        .secret_set(&name, "TOKEN", &secret(&value2))
        .await
        .unwrap();
    let (a, logs, _) = run(&engine, &name, &hunter(&value2)).await;
    let cache = cache_of(&a);
    assert_eq!(cache.status.as_str(), "miss");
    assert!(
        cache.reason.starts_with("secrets changed since snapshot"),
        "{cache:?}"
    );
    assert!(
        a.final_message
            .unwrap()
            .starts_with("env=0 procs=0 files=0"),
        "{logs:?}"
    );

    // An agent that got hold of a value anyway (here from the task's own script, encoded
    // so that the stored script holds no copy): redacted in the message and the diff.
    let (a, _, id) = run(
        &engine,
        &name,
        &format!(
            "V=$(echo {} | base64 -d)\necho \"leak $V\" > leaked.txt\necho \"final $V\"",
            base64(&value2)
        ),
    )
    .await;
    assert_eq!(a.final_message.as_deref(), Some("final [secret:TOKEN]"));
    let diff = String::from_utf8(
        engine
            .diff(&common::handle(&engine, &id).await, a.index)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(diff.contains("+leak [secret:TOKEN]"), "{diff}");

    // At rest, the values exist only as ciphertext.
    let root = hangar_testkit::shared_store().root().to_path_buf();
    for f in ["hangar.db", "hangar.db-wal"] {
        if let Ok(bytes) = std::fs::read(root.join(f)) {
            for v in [&value, &value2, &gh] {
                assert!(
                    !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                    "{f} holds a secret in the clear"
                );
            }
        }
    }
    // Debug prints every field: a value in any of them shows.
    let listed = format!("{:?}", engine.secret_ls(&name).await.unwrap());
    assert!(listed.contains("\"TOKEN\"") && listed.contains("api.github.com"));
    assert!(!listed.contains(&value2) && !listed.contains(&gh));
}

#[tokio::test]
async fn a_secret_left_by_setup_fails_the_build_or_is_scrubbed() {
    let engine = engine().await;
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let name = format!("leak-{}", TaskId::random());
    let setup = "echo \"//registry.invalid/:_authToken=$TOKEN\" > ~/.npmrc";
    let source = file(&name, origin.path(), setup, "", "");
    with_secrets(&engine, &name, &source, origin.path(), &fresh_value("npm")).await;

    let (a, _, _) = run(&engine, &name, "cat ~/.npmrc").await;
    assert_eq!(
        a.error.as_deref(),
        Some("setup left secret `TOKEN` in /root/.npmrc; the snapshot is not kept (remove the file in the setup script, or set [setup] on_secret_leak = \"scrub\")")
    );
    assert!(
        engine
            .snapshots()
            .await
            .unwrap()
            .iter()
            .all(|s| s.environment != name),
        "nothing is cached"
    );

    let scrubbing = file(
        &name,
        origin.path(),
        setup,
        "",
        "on_secret_leak = \"scrub\"",
    );
    engine
        .update_env(&name, "e.toml", &scrubbing, origin.path())
        .await
        .unwrap();
    let (a, logs, _) = run(&engine, &name, "cat ~/.npmrc").await;
    assert_eq!(a.error, None, "{logs:?}");
    let message = a.final_message.unwrap();
    assert!(
        message.starts_with("//registry.invalid/:_authToken=hangar-placeholder-"),
        "{message}"
    );
    assert!(
        logs.contains(
            &"scrubbed secret `TOKEN` from /root/.npmrc: it now holds the secret's placeholder"
                .to_string()
        ),
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_secret_left_by_maintenance_stops_the_attempt_before_the_agent() {
    let engine = engine().await;
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let name = format!("mleak-{}", TaskId::random());
    let source = file(&name, origin.path(), "", "echo \"$TOKEN\" > /tmp/token", "");
    with_secrets(&engine, &name, &source, origin.path(), &fresh_value("m")).await;
    let (a, _, _) = run(&engine, &name, "echo the agent ran").await;
    assert_eq!(
        a.error.as_deref(),
        Some("the maintenance script left secret `TOKEN` in /tmp/token, where the agent would read it")
    );
    assert!(a
        .phases
        .iter()
        .all(|p| p.phase != hangar_spec::Phase::Agent));
}

/// A hostile setup hides the value where the scan of literal contents did not look: in a
/// file's and a directory's name, an extended attribute, a commit of another repository
/// that it then reset away, and files of its encodings. Each place is named (redacted)
/// and the snapshot is not kept, so no agent reads it; scrubbing cannot rewrite the git
/// objects, so it refuses too.
#[tokio::test]
async fn a_secret_hidden_in_names_attributes_git_objects_or_encodings_fails_the_build() {
    let engine = engine().await;
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let name = format!("hide-{}", TaskId::random());
    let setup = r#"set -e
touch "/opt/file-$TOKEN"
mkdir "/opt/dir-$TOKEN"
python3 -c 'import os; open("/opt/attr", "w").close(); os.setxattr("/opt/attr", "user.note", os.environ["TOKEN"].encode())'
git init -q /opt/other
cd /opt/other
git -c user.name=s -c user.email=s@s commit -q --allow-empty -m base
printf '%s\n' "$TOKEN" > kept-for-a-moment
git add kept-for-a-moment
git -c user.name=s -c user.email=s@s commit -q -m oops
git reset -q --hard HEAD~1
printf 'user:%s' "$TOKEN" | base64 > /opt/b64
python3 -c 'import os; t = os.environ["TOKEN"]; open("/opt/hex", "w").write(t.encode().hex()); open("/opt/utf16", "wb").write(t.encode("utf-16-le")); open("/opt/reversed", "w").write(t[::-1])'"#;
    for extra in ["", "on_secret_leak = \"scrub\""] {
        let source = file(&name, origin.path(), setup, "", extra);
        if extra.is_empty() {
            with_secrets(&engine, &name, &source, origin.path(), &fresh_value("hide")).await;
        } else {
            engine
                .update_env(&name, "e.toml", &source, origin.path())
                .await
                .unwrap();
        }
        let (a, logs, _) = run(&engine, &name, "echo the agent ran").await;
        let error = object_named(&a.error.unwrap_or_default());
        let object = "secret `TOKEN` in the inflated contents of /opt/other/.git/objects/ID";
        let expected = if extra.is_empty() {
            format!(
                "setup left secret `TOKEN` in extended attribute `user.note` of /opt/attr, \
                 secret `TOKEN` in /opt/b64, \
                 secret `TOKEN` in the name of /opt/dir-[secret:TOKEN], \
                 secret `TOKEN` in the name of /opt/file-[secret:TOKEN], \
                 secret `TOKEN` in /opt/hex, {object}, \
                 secret `TOKEN` in /opt/reversed, secret `TOKEN` in /opt/utf16; \
                 the snapshot is not kept (remove the file in the setup script, or set \
                 [setup] on_secret_leak = \"scrub\")"
            )
        } else {
            for scrubbed in [
                "extended attribute `user.note` of /opt/attr",
                "/opt/b64",
                "the name of /opt/dir-[secret:TOKEN]",
                "/opt/utf16",
            ] {
                let note = format!(
                    "scrubbed secret `TOKEN` from {scrubbed}: it now holds the secret's placeholder"
                );
                assert!(logs.contains(&note), "{note} {logs:?}");
            }
            format!(
                "setup left {object}, which cannot be scrubbed; the snapshot is not kept \
                 (remove it in the setup script; for a git object, the commit or file that \
                 holds it and then `git gc --prune=now`)"
            )
        };
        assert_eq!(error, expected, "{logs:?}");
        assert!(a
            .phases
            .iter()
            .all(|p| p.phase != hangar_spec::Phase::Agent));
    }
    assert!(
        engine
            .snapshots()
            .await
            .unwrap()
            .iter()
            .all(|s| s.environment != name),
        "nothing is cached"
    );
}

/// `message` with the loose object's path (its id, which hashes the random value) as
/// `objects/ID`.
fn object_named(message: &str) -> String {
    let at = "/.git/objects/";
    match message.find(at) {
        Some(i) if message.len() >= i + at.len() + 41 => {
            format!("{}{at}ID{}", &message[..i], &message[i + at.len() + 41..])
        }
        _ => message.to_string(),
    }
}

/// An honest setup that commits the value by mistake and resets it away: the reflogs and
/// unreachable objects of the workspace repository are pruned before the scan, so the
/// snapshot is kept, and the agent finds the value in none of the repository's objects
/// (where setup, as a control, found it before pruning).
#[tokio::test]
async fn a_secret_committed_and_reset_away_by_setup_is_pruned_before_the_agent() {
    let engine = engine().await;
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let name = format!("reset-{}", TaskId::random());
    let value = fresh_value("reset");
    let setup = r#"printf '%s\n' "$TOKEN" > oops
git add oops
git -c user.name=s -c user.email=s@s commit -q -m oops
git reset -q --hard HEAD~1
echo "control: $(git cat-file --batch-all-objects --batch | grep -caF "$TOKEN")""#;
    let source = file(&name, origin.path(), setup, "", "");
    with_secrets(&engine, &name, &source, origin.path(), &value).await;
    let hunt = format!(
        "V=$(echo {} | base64 -d)\necho \"objects=$(git cat-file --batch-all-objects --batch | grep -caF \"$V\")\"",
        base64(&value)
    );
    let (a, logs, _) = run(&engine, &name, &hunt).await;
    assert_eq!(a.error, None, "{logs:?}");
    assert!(logs.contains(&"control: 1".to_string()), "{logs:?}");
    assert_eq!(a.final_message.as_deref(), Some("objects=0"), "{logs:?}");
}
