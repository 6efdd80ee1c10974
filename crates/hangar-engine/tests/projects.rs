//! Real projects on the first try: a Python, a Node and a Rust project as their registries
//! publish them, each made into a git repository, in an environment that names nothing but
//! its repository and its own test suite as the check: the default image, auto-install
//! through hangar's proxy (behind this machine's TLS-inspecting egress, with the host's
//! CAs), a one-line change by a script agent whose diff holds exactly that line (not the
//! installed dependencies), and that diff applied to a fresh clone passing the suite on a
//! warm environment. One test per project; they share the default image's build.

use hangar_engine::TaskRequest;
use hangar_spec::{AttemptStatus, Phase, TaskId};
use hangar_store::db::AttemptRecord;
use hangar_testkit::git;
use hangar_testkit::projects::{self, RealProject};

mod common;

/// The phase timings of an attempt, for the log of the run (not asserted: timing is the
/// benchmarks' business).
fn timings(a: &AttemptRecord) -> String {
    a.phases
        .iter()
        .map(|p| format!("{} {} ms", p.phase, p.ended_ms - p.started_ms))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `project` as a new user would, and checks every promise along the way.
async fn first_try(project: RealProject) {
    let store = hangar_testkit::shared_store();
    hangar_testkit::default_image(&store);
    let engine = common::engine().await;
    let name = format!("{}-{}", project.name, TaskId::random());
    let repo = project.repo.path();
    let file = format!(
        "name = \"{name}\"\nrepo = \"{}\"\n\n[agent]\ncheck = \"{}\"\nscript = '''\n\
         echo '{}' >> {}\necho appended a line\n'''\n",
        repo.display(),
        project.check,
        project.line,
        project.file,
    );
    engine
        .create_env("environment.toml", &file, repo)
        .await
        .unwrap();

    // Cold: the snapshot is built (auto-install from the lockfile), the agent changes one
    // line and the suite passes.
    let (task, a) = common::run(&engine, &common::request(&name, "append a line")).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}\n{logs:#?}", a.error);
    assert_eq!(common::cache_of(&a).status.as_str(), "miss");
    assert!(
        a.check.as_ref().is_some_and(|c| c.passed),
        "the suite failed:\n{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.starts_with("hangar: auto-install: ")),
        "{logs:#?}"
    );
    let diff = common::diff(&engine, &task.id, 1).await;
    assert_eq!(
        hangar_engine::diff::patch_paths(diff.as_bytes()).unwrap(),
        [project.file],
        "{diff}"
    );
    let added: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert_eq!(added, [format!("+{}", project.line)], "{diff}");
    let s = a.summary.unwrap();
    assert_eq!((s.files_changed, s.lines_added, s.lines_removed), (1, 1, 0));
    eprintln!("{}: cold: {}", project.name, timings(&a));

    // The diff applies to a fresh clone at the base commit; pushed as a branch, a warm
    // task on it (the agent does nothing) passes the suite.
    let clone = tempfile::tempdir().unwrap();
    git(clone.path(), &["clone", "-q", repo.to_str().unwrap(), "."]);
    git(
        clone.path(),
        &[
            "checkout",
            "-q",
            "-b",
            "applied",
            a.base_commit.as_deref().unwrap(),
        ],
    );
    let patch = engine
        .diff(&common::handle(&engine, &task.id).await, 1)
        .await
        .unwrap()
        .unwrap();
    let applied = hangar_engine::apply_patch(clone.path(), &patch).expect("apply");
    assert_eq!(applied.files, [project.file]);
    git(clone.path(), &["commit", "-qam", "the agent's change"]);
    git(clone.path(), &["push", "-q", "origin", "applied"]);
    let warm = TaskRequest {
        branch: Some("applied".into()),
        script: Some("echo nothing to do".into()),
        ..common::request(&name, "run the suite")
    };
    let (task, b) = common::run(&engine, &warm).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(b.status, AttemptStatus::Ready, "{:?}\n{logs:#?}", b.error);
    assert_eq!(common::cache_of(&b).status.as_str(), "hit");
    assert!(!b.phases.iter().any(|p| p.phase == Phase::Setup));
    assert!(
        b.check.as_ref().is_some_and(|c| c.passed),
        "the suite failed on the applied change:\n{logs:#?}"
    );
    assert_eq!(common::diff(&engine, &task.id, 1).await, "");
    eprintln!("{}: warm: {}", project.name, timings(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_project_with_requirements_works_on_the_first_try() {
    first_try(projects::six()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_project_with_a_lockfile_and_no_gitignore_works_on_the_first_try() {
    first_try(projects::minimist()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_project_with_a_lockfile_works_on_the_first_try() {
    first_try(projects::semver()).await;
}
