//! The diff from the host's list of changed paths (the sandbox's upper directory): every
//! kind of change is in it, whatever the agent or the repository's code did to the index
//! or to files' sizes and times, and nothing setup left or git ignores is.

use std::path::Path;

use hangar_engine::Engine;
use hangar_spec::{AttemptStatus, TaskId};
use hangar_testkit::repo_with as repo;

mod common;

use common::{engine, request};

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

/// Changes the agent tries to hide (same size, old mtime, flags set in the index by the
/// repository's maintenance, a corrupted workspace index) are in the diff beside every
/// other kind of change; setup's untracked files and ignored files are not.
#[tokio::test]
async fn the_listed_changes_are_the_agents_whatever_the_index_says() {
    let engine = engine().await;
    let origin = repo(&[
        ("same-size.txt", b"aaaa\n"),
        ("assumed.txt", b"bbbb\n"),
        ("gone.txt", b"deleted\n"),
        ("dir/one.txt", b"one\n"),
        ("dir/two.txt", b"two\n"),
        ("ignored/tracked.txt", b"tracked\n"),
        ("glob*name.txt", b"glob\n"),
        (
            "old.txt",
            b"a file to be moved, long enough to be seen as a rename\n",
        ),
        ("untouched/deep/file.txt", b"same\n"),
    ]);
    let extra = r#"[setup]
script = '''
echo 'ignored/' >> .git/info/exclude
mkdir -p cache && echo setup > cache/setup.txt
'''

[maintenance]
script = '''
git update-index --skip-worktree same-size.txt
git update-index --assume-unchanged assumed.txt
echo built > build.out
'''

[agent]
script = '''
for f in same-size.txt assumed.txt; do
  m="$(stat -c %Y "$f")"
  tr a-z A-Z < "$f" > "$f.new" && cat "$f.new" > "$f" && rm "$f.new"
  touch -d "@$m" "$f"
done
rm gone.txt
rm -rf dir && mkdir dir && echo changed > dir/one.txt
echo more >> ignored/tracked.txt
echo new > ignored/new.txt
rm cache/setup.txt
echo new > 'new [file]*.txt'
echo more >> 'glob*name.txt'
mkdir moved && mv old.txt moved/old.txt
rm build.out
echo garbage > .git/index
'''
"#;
    let name = env(&engine, origin.path(), extra).await;
    let (task, a) = common::run(&engine, &request(&name, "hide things")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    let diff = common::diff(&engine, &task.id, 1).await;
    for want in [
        "-aaaa\n+AAAA\n",
        "-bbbb\n+BBBB\n",
        "deleted file mode 100644\nindex ",
        "--- a/gone.txt",
        "-one\n+changed\n",
        "--- a/dir/two.txt",
        "+++ b/ignored/tracked.txt",
        "+++ b/new [file]*.txt",
        "+++ b/glob*name.txt",
        "rename from old.txt\nrename to moved/old.txt",
    ] {
        assert!(diff.contains(want), "diff lacks {want:?}:\n{diff}");
    }
    for unwanted in [
        "ignored/new.txt",
        "cache/setup.txt",
        "build.out",
        "untouched",
    ] {
        assert!(!diff.contains(unwanted), "diff has {unwanted:?}:\n{diff}");
    }
    assert_eq!(a.summary.unwrap().files_changed, 9, "{diff}");
}

/// An agent that changes nothing has an empty diff; one that makes the workspace
/// directory again (so the upper directory cannot say what in it changed) is walked,
/// and its change is there.
#[tokio::test]
async fn nothing_changed_is_empty_and_a_remade_workspace_is_walked() {
    let engine = engine().await;
    let origin = repo(&[("a.txt", b"a\n"), ("b.txt", b"b\n")]);
    let idle = env(&engine, origin.path(), "[agent]\nscript = 'true'\n").await;
    let (task, a) = common::run(&engine, &request(&idle, "nothing")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    assert_eq!(common::diff(&engine, &task.id, 1).await, "");

    let remade = env(
        &engine,
        origin.path(),
        r#"[agent]
script = '''
here="$PWD"
cd .. && mv "$here" "$here.old" && cp -a "$here.old" "$here" && rm -rf "$here.old"
cd "$here" && echo more >> a.txt
'''
"#,
    )
    .await;
    let (task, a) = common::run(&engine, &request(&remade, "remake")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    let diff = common::diff(&engine, &task.id, 1).await;
    assert!(diff.contains("+more"), "{diff}");
    assert_eq!(a.summary.unwrap().files_changed, 1, "{diff}");
}

/// A snapshot whose setup changed a tracked file (same size, its mtime put back) is not
/// taken as being at the commit: the attempt checks out in full and the agent finds the
/// commit's file.
#[tokio::test]
async fn a_setup_that_changed_a_tracked_file_is_checked_out_again() {
    let engine = engine().await;
    let origin = repo(&[("a.txt", b"aaaa\n"), ("b.txt", b"b\n")]);
    let extra = r#"[setup]
script = '''
m="$(stat -c %Y a.txt)"
echo AAAA > a.txt
touch -d "@$m" a.txt
'''

[agent]
script = '''
cat a.txt
'''
"#;
    let name = env(&engine, origin.path(), extra).await;
    for round in 0..2 {
        let (task, a) = common::run(&engine, &request(&name, "read a")).await;
        assert_eq!(a.status, AttemptStatus::Ready, "{round}: {:?}", a.error);
        assert_eq!(a.final_message.as_deref(), Some("aaaa"), "{round}");
        assert_eq!(common::diff(&engine, &task.id, 1).await, "", "{round}");
    }
}
