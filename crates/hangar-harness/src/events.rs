//! hangar's events, one vocabulary for every CLI: messages, commands run, files changed,
//! errors and the final message.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Message,
    Command,
    #[serde(rename = "file")]
    FileChange,
    Error,
    Final,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Command => "command",
            EventKind::FileChange => "file",
            EventKind::Error => "error",
            EventKind::Final => "final",
        }
    }
}

/// One event of an agent's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentEvent {
    pub kind: EventKind,
    /// The message, command line, file path or error.
    pub text: String,
    /// A command's exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// A command's output, or how a file changed (`add`, `update`, `delete`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Command output kept in an event, at most.
const OUTPUT_LIMIT: usize = 4096;

impl AgentEvent {
    pub fn new(kind: EventKind, text: impl Into<String>) -> AgentEvent {
        AgentEvent {
            kind,
            text: text.into(),
            exit_code: None,
            detail: None,
        }
    }

    pub fn command(command: &str, exit_code: Option<i32>, output: &str) -> AgentEvent {
        let mut output = output.to_string();
        if output.len() > OUTPUT_LIMIT {
            let mut cut = OUTPUT_LIMIT;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
            output.push_str("\n[output cut]");
        }
        AgentEvent {
            kind: EventKind::Command,
            text: command.to_string(),
            exit_code,
            detail: (!output.is_empty()).then_some(output),
        }
    }

    pub fn file(path: &str, how: &str) -> AgentEvent {
        AgentEvent {
            kind: EventKind::FileChange,
            text: path.to_string(),
            exit_code: None,
            detail: Some(how.to_string()),
        }
    }
}
