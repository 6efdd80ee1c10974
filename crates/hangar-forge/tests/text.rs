//! The texts hangar posts, for one fixed outcome, against the files in `snapshots/`
//! (`HANGAR_BLESS=1` rewrites them), and what an agent's message cannot do to them.

use std::path::Path;

use hangar_forge::text::{self, AttemptLine, Outcome};
use hangar_forge::PullRequest;

fn outcome() -> Outcome {
    Outcome {
        task: "t-7f3a".into(),
        prompt: "Fix the flaky parser test\n\nIt fails one run in ten on CI.".into(),
        attempt: 2,
        final_message: Some(
            "The test raced the file watcher; it now waits for the event.\n\n\
             ```rust\nwatcher.wait()?;\n```"
                .into(),
        ),
        check: Some("passed".into()),
        attempts: vec![
            AttemptLine {
                n: 1,
                status: "failed".into(),
                rank: None,
                best: false,
                check: Some("failed (exit 1)".into()),
                files: 1,
                insertions: 3,
                deletions: 1,
            },
            AttemptLine {
                n: 2,
                status: "succeeded".into(),
                rank: Some(1),
                best: true,
                check: Some("passed".into()),
                files: 2,
                insertions: 14,
                deletions: 6,
            },
        ],
        link: Some("https://hangar.example:7700/ui/tasks/t-7f3a".into()),
        status: "succeeded".into(),
        error: None,
    }
}

fn failed() -> Outcome {
    Outcome {
        final_message: None,
        check: None,
        attempts: vec![],
        link: None,
        status: "failed".into(),
        error: Some("every attempt failed its check".into()),
        prompt: String::new(),
        ..outcome()
    }
}

/// Compares `got` with the snapshot `name`, or writes it under `HANGAR_BLESS=1`.
fn check(name: &str, got: &str, mismatches: &mut Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("HANGAR_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (HANGAR_BLESS=1 writes it)", path.display()));
    if want != got {
        mismatches.push(format!("{name}:\n--- want\n{want}\n--- got\n{got}"));
    }
}

#[test]
fn texts_match_their_snapshots() {
    let pull = PullRequest {
        number: 12,
        url: "https://github.com/octo/repo/pull/12".into(),
        head: "hangar/t-7f3a".into(),
        base: "main".into(),
    };
    let mut mismatches = Vec::new();
    check(
        "title.txt",
        &format!("{}\n", text::title(&outcome())),
        &mut mismatches,
    );
    check(
        "title-empty.txt",
        &format!("{}\n", text::title(&failed())),
        &mut mismatches,
    );
    check(
        "pull-body.md",
        &text::pull_body(&outcome()),
        &mut mismatches,
    );
    check(
        "pull-body-failed.md",
        &text::pull_body(&failed()),
        &mut mismatches,
    );
    check(
        "answer.md",
        &text::answer(&outcome(), Some(&pull)),
        &mut mismatches,
    );
    check(
        "answer-no-pull.md",
        &text::answer(&failed(), None),
        &mut mismatches,
    );
    check("review.md", &text::review(&outcome()), &mut mismatches);
    check(
        "not-allowed.md",
        &text::not_allowed("octocat"),
        &mut mismatches,
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// Lines of `body` outside fenced code blocks (whose fences are the body's own).
fn outside_fences(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    for line in body.lines() {
        let run: String = line.chars().take_while(|c| *c == '`').collect();
        match &fence {
            Some(f) if run.len() >= f.len() && line.trim_start_matches('`').trim().is_empty() => {
                fence = None
            }
            Some(_) => {}
            None if run.len() >= 3 => fence = Some(run),
            None => out.push(line.to_string()),
        }
    }
    assert!(fence.is_none(), "a fence was left open:\n{body}");
    out
}

#[test]
fn an_agents_message_cannot_mention_or_escape() {
    let hostile = "Done. cc @octocat @github/security\n````\n```\n</details>\n<details open>\
                   <summary>@admin</summary>\n| a | b |\n";
    let mut o = outcome();
    o.final_message = Some(hostile.into());
    o.prompt = "@octocat please </details> ```\n````\n<details>@github/security".into();
    o.check = Some("passed | @octocat".into());
    o.attempts[0].check = Some("`x` @octocat </details>".into());
    o.error = Some("@octocat".into());
    o.status = "failed".into();
    for body in [
        text::pull_body(&o),
        text::answer(&o, None),
        text::review(&o),
        text::not_allowed("@octocat"),
    ] {
        let outside = outside_fences(&body);
        for line in &outside {
            assert!(
                !line.contains("@octocat"),
                "a mention in {line:?} of\n{body}"
            );
            assert!(
                !line.contains("@github"),
                "a mention in {line:?} of\n{body}"
            );
            assert!(!line.contains("@admin"), "a mention in {line:?} of\n{body}");
            assert!(!line.contains("</details>"), "HTML in {line:?} of\n{body}");
            assert!(!line.contains("<details"), "HTML in {line:?} of\n{body}");
        }
        // The message is whole inside one block: its own fences did not close it.
        if body.contains("Done. cc") {
            assert!(body.contains(hostile.trim_end()), "{body}");
            assert!(
                !outside.iter().any(|l| l.contains("Done. cc")),
                "the message leaked out of its block:\n{body}"
            );
        }
    }
    // A title is plain text to GitHub (HTML in it shows as written), but mentions none.
    let title = text::pull_title(&o.prompt);
    assert!(!title.contains("@octocat"), "{title}");
}
