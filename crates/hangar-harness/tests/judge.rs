//! Each adapter's judge over what its real CLI left (recorded against the scripted model:
//! a run that wrote hello.txt, and a run whose model refused), as data.

use std::path::Path;

use hangar_harness::{harness, Kind, Outputs, Verdict};

fn outputs(kind: Kind, case: &str, exit_code: i32) -> Outputs {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind.as_str())
        .join(case);
    let mut out = Outputs {
        exit_code: Some(exit_code),
        ..Outputs::default()
    };
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        out.files.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    out
}

/// The verdict and the events, one line each.
fn check(kind: Kind, case: &str, exit_code: i32, expected: &[&str]) {
    let judged = harness(kind).judge(&outputs(kind, case, exit_code));
    let mut got = vec![match &judged.verdict {
        Verdict::Done { final_message } => format!("done: {final_message:?}"),
        Verdict::Failed { message } => format!("failed: {message}"),
    }];
    for e in &judged.events {
        let mut line = format!("{} {}", e.kind.as_str(), e.text);
        if let Some(c) = e.exit_code {
            line.push_str(&format!(" => {c}"));
        }
        got.push(line);
    }
    assert_eq!(got, expected, "{kind} {case}");
}

const CMD: &str = "printf '%s' 'hi\n' > 'hello.txt'";

#[test]
fn codex() {
    check(
        Kind::Codex,
        "ok",
        0,
        &[
            "done: Some(\"created hello.txt\")",
            &format!("command /bin/bash -lc \"{CMD}\" => 0"),
            "final created hello.txt",
        ],
    );
    let refused = "scripted failure: the model is out of service";
    check(
        Kind::Codex,
        "fail",
        1,
        &[&format!("failed: {refused}"), &format!("error {refused}")],
    );
}

#[test]
fn claude() {
    check(
        Kind::Claude,
        "ok",
        0,
        &[
            "done: Some(\"created hello.txt\")",
            &format!("command {CMD} => 0"),
            "final created hello.txt",
        ],
    );
    let said = "API Error: 400 scripted failure: the model is out of service";
    check(
        Kind::Claude,
        "fail",
        1,
        &[
            &format!("failed: {said}"),
            &format!("message {said}"),
            &format!("error {said}"),
        ],
    );
}

#[test]
fn openclaw() {
    check(
        Kind::Openclaw,
        "ok",
        0,
        &[
            "done: Some(\"created hello.txt\")",
            &format!("command {CMD} => 0"),
            "final created hello.txt",
        ],
    );
    let said = "LLM request failed: provider rejected the request schema or tool payload.";
    check(
        Kind::Openclaw,
        "fail",
        1,
        &[&format!("failed: {said}"), &format!("error {said}")],
    );
}

#[test]
fn hermes_is_judged_by_its_usage_file_not_its_exit_code() {
    check(
        Kind::Hermes,
        "ok",
        0,
        &[
            "done: Some(\"created hello.txt\")",
            &format!("command {CMD} => 0"),
            "final created hello.txt",
        ],
    );
    let said = "HTTP 400: scripted failure: the model is out of service";
    check(
        Kind::Hermes,
        "fail",
        0,
        &[&format!("failed: {said}"), &format!("error {said}")],
    );
}

#[test]
fn aider_is_judged_by_its_output_not_its_exit_code() {
    check(
        Kind::Aider,
        "ok",
        0,
        &[
            "done: Some(\"created hello.txt\")",
            "file hello.txt",
            "final created hello.txt",
        ],
    );
    let said =
        "litellm.BadRequestError: OpenAIException - scripted failure: the model is out of service";
    check(
        Kind::Aider,
        "fail",
        0,
        &[&format!("failed: {said}"), &format!("error {said}")],
    );
}
