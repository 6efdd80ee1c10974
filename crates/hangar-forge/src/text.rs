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

/// The pull request's title: the prompt's first line, at most 72 characters.
pub fn pull_title(prompt: &str) -> String {
    let _ = prompt;
    todo!()
}

/// The pull request's body: the prompt, the final message, the check, the attempts and
/// ranking, the link.
pub fn pull_body(outcome: &Outcome) -> String {
    let _ = outcome;
    todo!()
}

/// The comment answering a mention once its task ended, with the pull request when one
/// was opened.
pub fn answer(outcome: &Outcome, pull: Option<&crate::PullRequest>) -> String {
    let _ = (outcome, pull);
    todo!()
}

/// A review's body: the agent's final message, and the task.
pub fn review(outcome: &Outcome) -> String {
    let _ = outcome;
    todo!()
}

/// The polite answer to a sender who may not trigger hangar.
pub fn not_allowed(sender: &str) -> String {
    let _ = sender;
    todo!()
}
