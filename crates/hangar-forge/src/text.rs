//! What hangar writes on a forge: a pull request's title and body, the comment that
//! answers a mention, a review. Pure, from an [`Outcome`]; whatever came from the agent
//! or the repository is quoted so it cannot close hangar's markup or mention anyone.

/// One attempt, as a line of the body's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLine {
    pub n: u32,
    /// `succeeded`, `failed`, `error`, `cancelled`.
    pub status: String,
    pub rank: Option<u32>,
    pub best: bool,
    /// `passed`, `failed (exit 1)`, ... or `None` without a check.
    pub check: Option<String>,
    pub files: u32,
    pub insertions: u64,
    pub deletions: u64,
}

/// A finished task, as far as the text needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub task: String,
    pub prompt: String,
    /// The chosen attempt.
    pub attempt: u32,
    pub final_message: Option<String>,
    /// The chosen attempt's check, as in [`AttemptLine::check`].
    pub check: Option<String>,
    pub attempts: Vec<AttemptLine>,
    /// The task's page in the web UI, when the daemon has a TCP listener.
    pub link: Option<String>,
    /// The task's status (`succeeded`, `failed`, ...).
    pub status: String,
    /// A sentence saying why it failed, when it did.
    pub error: Option<String>,
}

/// A title's longest length, in characters (GitHub cuts longer ones in lists).
pub const TITLE_MAX: usize = 72;

/// The pull request's title: the prompt's first line, at most 72 characters. An empty
/// prompt makes `hangar task`; [`title`] names the task instead.
pub fn pull_title(prompt: &str) -> String {
    title_or(prompt, || "hangar task".to_string())
}

/// The pull request's title for a task: [`pull_title`] of its prompt, or `hangar task
/// TASKID` when the prompt has no text.
pub fn title(outcome: &Outcome) -> String {
    title_or(&outcome.prompt, || {
        cut(
            &format!("hangar task {}", one_line(&outcome.task)),
            TITLE_MAX,
        )
    })
}

fn title_or(prompt: &str, empty: impl FnOnce() -> String) -> String {
    let first = prompt
        .lines()
        .map(one_line)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if first.is_empty() {
        return empty();
    }
    cut(&neutralize(&first), TITLE_MAX)
}

/// A line without control characters and with its whitespace runs made one space.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` cut to at most `max` characters, a cut one ending in `…`.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let kept: String = s.chars().take(max - 1).collect();
    format!("{}…", kept.trim_end())
}

/// Text that reads the same but mentions no one: a zero-width joiner after every `@`
/// (GitHub links `@name` and `@org/team` only when the name follows the `@` at once).
pub fn neutralize(s: &str) -> String {
    s.replace('@', "@\u{200d}")
}

/// Markdown-inline text that is shown as written: HTML and markdown's own characters
/// escaped, mentions neutralized, on one line.
fn inline(s: &str) -> String {
    let mut out = String::new();
    for c in neutralize(&one_line(s)).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A fenced code block holding `text` as it is: the fence is longer than any run of
/// backticks in it, so nothing inside can close it, and GitHub neither renders HTML nor
/// links mentions inside a code block.
pub fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    let text = text.trim_end_matches(['\n', '\r']);
    format!("{fence}text\n{text}\n{fence}")
}

/// A blockquote of `text`, line by line, shown as written.
fn quoted(text: &str) -> String {
    let text = text.trim_matches(['\n', '\r']);
    text.lines()
        .map(|l| {
            let l = inline(l);
            if l.is_empty() {
                ">".to_string()
            } else {
                format!("> {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A task id in code: hangar's own, yet never trusted to hold no backtick.
fn code(s: &str) -> String {
    let s = neutralize(&one_line(s)).replace('`', "'");
    format!("`{s}`")
}

/// A link hangar made (the task's page); anything else is shown as text.
fn link(label: &str, url: &str) -> String {
    let safe = (url.starts_with("https://") || url.starts_with("http://"))
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[]\"'`\\".contains(c));
    if safe {
        format!("[{label}]({url})")
    } else {
        format!("{label}: {}", inline(url))
    }
}

fn final_message(outcome: &Outcome) -> String {
    match outcome.final_message.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => format!("### The agent's final message\n\n{}", fenced(m)),
        _ => "The agent left no final message.".to_string(),
    }
}

fn check_line(outcome: &Outcome) -> String {
    let check = match &outcome.check {
        Some(c) => inline(c),
        None => "none".to_string(),
    };
    format!("**Check** (attempt {}): {check}", outcome.attempt)
}

fn status_line(outcome: &Outcome) -> Option<String> {
    if outcome.status == "succeeded" && outcome.error.is_none() {
        return None;
    }
    let mut line = format!("**The task {}**", inline(&outcome.status));
    if let Some(e) = &outcome.error {
        line.push_str(": ");
        line.push_str(&inline(e));
    }
    Some(line)
}

fn attempts_table(outcome: &Outcome) -> String {
    let mut t = String::from(
        "| Attempt | Status | Rank | Best | Check | Files | +/- |\n\
         |--:|---|--:|:-:|---|--:|---|",
    );
    for a in &outcome.attempts {
        t.push_str(&format!(
            "\n| {} | {} | {} | {} | {} | {} | +{} / -{} |",
            a.n,
            inline(&a.status),
            a.rank.map(|r| r.to_string()).unwrap_or_else(|| "–".into()),
            if a.best { "✓" } else { "" },
            a.check.as_deref().map(inline).unwrap_or_else(|| "–".into()),
            a.files,
            a.insertions,
            a.deletions,
        ));
    }
    t
}

fn task_link(outcome: &Outcome) -> Option<String> {
    outcome
        .link
        .as_deref()
        .map(|url| link("The task's page", url))
}

fn join(parts: Vec<Option<String>>) -> String {
    let mut s = parts.into_iter().flatten().collect::<Vec<_>>().join("\n\n");
    s.push('\n');
    s
}

/// The pull request's body: the prompt, the final message, the check, the attempts and
/// ranking, the link.
pub fn pull_body(outcome: &Outcome) -> String {
    join(vec![
        Some(quoted(&outcome.prompt)).filter(|q| !q.is_empty()),
        status_line(outcome),
        Some(final_message(outcome)),
        Some(check_line(outcome)),
        (!outcome.attempts.is_empty()).then(|| attempts_table(outcome)),
        task_link(outcome),
        Some(format!(
            "---\nOpened by hangar for task {}",
            code(&outcome.task)
        )),
    ])
}

/// The comment answering a mention once its task ended, with the pull request when one
/// was opened.
pub fn answer(outcome: &Outcome, pull: Option<&crate::PullRequest>) -> String {
    let head = match pull {
        Some(p) => format!(
            "hangar finished task {} ({}): {}",
            code(&outcome.task),
            inline(&outcome.status),
            link(&format!("pull request #{}", p.number), &p.url)
        ),
        None => format!(
            "hangar finished task {} ({}), with no pull request.",
            code(&outcome.task),
            inline(&outcome.status)
        ),
    };
    join(vec![
        Some(head),
        status_line(outcome),
        Some(final_message(outcome)),
        Some(check_line(outcome)),
        task_link(outcome),
    ])
}

/// A review's body: the agent's final message, and the task.
pub fn review(outcome: &Outcome) -> String {
    join(vec![
        status_line(outcome),
        Some(final_message(outcome)),
        task_link(outcome),
        Some(format!(
            "---\nReviewed by hangar for task {}",
            code(&outcome.task)
        )),
    ])
}

/// The polite answer to a sender who may not trigger hangar.
pub fn not_allowed(sender: &str) -> String {
    format!(
        "Sorry, {}: only the repository's owners, members and collaborators may ask hangar \
         for work.\n",
        code(sender)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(prompt: &str, expected: &str) {
        let got = pull_title(prompt);
        assert_eq!(got, expected, "{prompt:?}");
        assert!(got.chars().count() <= TITLE_MAX, "{got:?}");
    }

    #[test]
    fn titles_are_one_short_line() {
        check("Fix the flaky test", "Fix the flaky test");
        check("\n\n  Fix   the\ttest  \nand more", "Fix the test");
        check("", "hangar task");
        check(" \n\t\n", "hangar task");
        check(&"a".repeat(72), &"a".repeat(72));
        check(&"a".repeat(73), &format!("{}…", "a".repeat(71)));
        check(&"é".repeat(80), &format!("{}…", "é".repeat(71)));
        check(
            &format!("{} bc", "a".repeat(70)),
            &format!("{}…", "a".repeat(70)),
        );
        check("ask @octocat", "ask @\u{200d}octocat");
        check("a\u{7}b\rc", "a b c");
    }

    #[test]
    fn an_empty_prompt_titles_the_task() {
        let outcome = Outcome {
            task: "t-42".into(),
            prompt: "  ".into(),
            attempt: 1,
            final_message: None,
            check: None,
            attempts: vec![],
            link: None,
            status: "succeeded".into(),
            error: None,
        };
        assert_eq!(title(&outcome), "hangar task t-42");
    }

    #[test]
    fn a_fence_outlasts_every_backtick_run() {
        assert_eq!(fenced("x"), "```text\nx\n```");
        assert_eq!(fenced("a ```` b\n"), "`````text\na ```` b\n`````");
        assert_eq!(fenced("`"), "```text\n`\n```");
    }

    #[test]
    fn inline_text_is_shown_as_written() {
        assert_eq!(
            inline("<b>*x*</b> | @a"),
            "&lt;b&gt;\\*x\\*&lt;/b&gt; \\| @\u{200d}a"
        );
    }

    #[test]
    fn only_web_links_are_links() {
        assert_eq!(link("p", "https://h/t/1"), "[p](https://h/t/1)");
        assert_eq!(link("p", "javascript:alert(1)"), "p: javascript:alert(1)");
        assert_eq!(link("p", "https://h/x) [y](z"), "p: https://h/x) \\[y\\](z");
    }
}
