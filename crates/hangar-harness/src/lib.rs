//! One adapter per agent CLI behind one trait. An adapter is pure: it says how the CLI
//! is installed (a script run once per image, cached as a layer), how one run is invoked
//! (files to write, a bash script, variables), which files to read back, and how to judge
//! the run and read its output into hangar's events. The engine does every I/O.

mod aider;
mod claude;
mod codex;
mod events;
mod hermes;
mod install;
mod openclaw;
mod script;

use std::collections::BTreeMap;

pub use events::{AgentEvent, EventKind};
pub use hangar_spec::Harness as Kind;
pub use install::{prefix, toolchain, toolchain_path, Install, Needs, TOOLCHAINS};

/// Where a run keeps its state in the sandbox: the CLI's own state and config dirs, and
/// output files.
pub const RUN_DIR: &str = "/.hangar/run/agent";

/// The variable that holds the model key (a placeholder the proxy swaps for the value).
pub const KEY_VAR: &str = "HANGAR_MODEL_KEY";

/// What an adapter needs to know about one run.
#[derive(Debug, Clone)]
pub struct RunSpec<'a> {
    pub model: Option<&'a str>,
    /// The model API's base URL, in the provider's convention.
    pub endpoint: Option<&'a str>,
    /// The workspace (the agent's working directory).
    pub workdir: &'a str,
    /// With the `script` harness: the agent script.
    pub script: Option<&'a str>,
}

/// One run of a CLI: files written before it, and the bash script that runs it (in the
/// workspace, with the prompt in `HANGAR_PROMPT` and the key in [`KEY_VAR`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Absolute path, content; written with mode 0600.
    pub files: Vec<(String, String)>,
    pub script: String,
    /// Files under [`RUN_DIR`] to read back after the run, by name.
    pub outputs: Vec<&'static str>,
}

/// What the run left: its exit code and the files it was asked to leave.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
    /// The step's last output lines (stdout and stderr), oldest first.
    pub tail: Vec<String>,
    /// The last line it printed on stdout.
    pub last_stdout: Option<String>,
    /// Output files by name; a missing file is absent.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Outputs {
    pub fn text(&self, name: &str) -> Option<String> {
        self.files
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// Why a run that left no verdict of its own failed: its last error-looking line,
    /// else how `cli` exited.
    fn failure(&self, cli: &str) -> String {
        self.last_error_line()
            .unwrap_or_else(|| exited(cli, self.exit_code))
    }

    /// The last non-empty output line that looks like an error, else the last line.
    fn last_error_line(&self) -> Option<String> {
        let lines = || {
            self.tail
                .iter()
                .rev()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
        };
        lines()
            .find(|l| {
                let lower = l.to_ascii_lowercase();
                lower.contains("error") || lower.contains("failed")
            })
            .or_else(|| lines().next())
            .map(str::to_string)
    }
}

/// How the run went, by the CLI's own account.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Done { final_message: Option<String> },
    Failed { message: String },
}

/// A judged run: its verdict and its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    pub events: Vec<AgentEvent>,
}

impl Judged {
    fn new(verdict: Verdict, mut events: Vec<AgentEvent>) -> Judged {
        match &verdict {
            Verdict::Done {
                final_message: Some(m),
            } => {
                // The last message, when it is the final one, is said once (as final).
                if events
                    .last()
                    .is_some_and(|e| e.kind == EventKind::Message && e.text.trim() == m.trim())
                {
                    events.pop();
                }
                events.push(AgentEvent::new(EventKind::Final, m));
            }
            Verdict::Failed { message } => {
                if !events
                    .iter()
                    .any(|e| e.kind == EventKind::Error && e.text == *message)
                {
                    events.push(AgentEvent::new(EventKind::Error, message));
                }
            }
            Verdict::Done { .. } => {}
        }
        Judged { verdict, events }
    }
}

/// How the model key travels on the wire: the header the CLI puts it in, and the
/// header's format with `{}` for the key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyHeader {
    pub header: &'static str,
    pub format: &'static str,
}

pub(crate) const BEARER: KeyHeader = KeyHeader {
    header: "authorization",
    format: "Bearer {}",
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HarnessError {
    #[error("the `{harness}` harness needs `agent.{field}` in the environment file")]
    Missing {
        harness: &'static str,
        field: &'static str,
    },
}

/// An agent CLI's adapter.
pub trait Harness: Send + Sync {
    fn kind(&self) -> Kind;

    /// How the CLI gets into the sandbox; `None` when nothing is installed.
    fn install(&self) -> Option<Install>;

    /// Where the CLI puts the model key.
    fn key_header(&self) -> KeyHeader;

    /// The run's files and script.
    fn invocation(&self, run: &RunSpec<'_>) -> Result<Invocation, HarnessError>;

    /// The verdict and the events, from what the run left.
    fn judge(&self, out: &Outputs) -> Judged;
}

/// The adapter for `kind`.
pub fn harness(kind: Kind) -> Box<dyn Harness> {
    match kind {
        Kind::Codex => Box::new(codex::Codex),
        Kind::Claude => Box::new(claude::Claude),
        Kind::Openclaw => Box::new(openclaw::OpenClaw),
        Kind::Hermes => Box::new(hermes::Hermes),
        Kind::Aider => Box::new(aider::Aider),
        Kind::Script => Box::new(script::Script),
    }
}

fn need<'a>(
    kind: Kind,
    field: &'static str,
    value: Option<&'a str>,
) -> Result<&'a str, HarnessError> {
    value.ok_or(HarnessError::Missing {
        harness: kind.as_str(),
        field,
    })
}

/// How a process that said nothing ended.
pub(crate) fn exited(cli: &str, code: Option<i32>) -> String {
    match code {
        Some(c) => format!("{cli} exited with code {c} and said nothing"),
        None => format!("{cli} was killed by a signal"),
    }
}

/// Stands for the key in a CLI's config file (which cannot read the environment) until
/// [`fill_key`] puts the placeholder from [`KEY_VAR`] there.
pub(crate) const KEY_MARK: &str = "__HANGAR_MODEL_KEY__";

/// The script line that fills the key into the config file at `path` (a bash word).
pub(crate) fn fill_key(path: &str) -> String {
    format!("sed -i \"s/{KEY_MARK}/${KEY_VAR}/\" {path}\n")
}

/// `s` as one bash word.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as a JSON string (also a valid TOML, YAML and JSON5 string).
pub(crate) fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The script's common head: errexit, the CLI's directory on PATH, stdin closed (CLIs
/// wait for EOF on an open pipe). [`RUN_DIR`] is the engine's to make before the run
/// (no process spent on a `mkdir`). The home stays the workspace user's, so the agent's
/// commands find what setup left there (cargo's registry, npm's cache, `~/.bashrc`);
/// each CLI's own state and configuration go to a directory of its own under
/// [`RUN_DIR`], named by its own variable or flag. A login shell (Codex runs every
/// command in `bash -lc`) would reset PATH in `/etc/profile`: [`LOGIN_PROFILE`] puts
/// the PATH the phase began with (the image's, `[env]`'s and `~/.bashrc`'s) back in front.
pub(crate) fn prelude(kind: Kind) -> String {
    format!(
        "set -o pipefail\nexec </dev/null\nexport HANGAR_AGENT_PATH=\"$PATH\"\n\
         export PATH={bin}:\"$PATH\"\n",
        bin = install::bin_path(kind),
    )
}

/// A profile script, and where it goes (sourced by `/etc/profile` after it sets PATH),
/// for every harness's run: the engine writes it, as root, readable by the agent's user.
pub const LOGIN_PROFILE: (&str, &str) = (
    "/etc/profile.d/zz-hangar-agent.sh",
    "if [ -n \"${HANGAR_AGENT_PATH:-}\" ]; then PATH=\"$HANGAR_AGENT_PATH:$PATH\"; export PATH; fi\n",
);

/// The prompt with the workspace's AGENTS.md in front, for CLIs that do not read it.
pub(crate) const PROMPT_WITH_AGENTS_MD: &str = r#"prompt="$HANGAR_PROMPT"
if [ -f AGENTS.md ]; then
  prompt="$(cat AGENTS.md)"$'\n\n'"$HANGAR_PROMPT"
fi
"#;

/// Lines of JSON (JSONL), skipping what does not parse.
pub(crate) fn json_lines(text: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
}

/// An API error's message: the nested `error.message` of a JSON body, else the text.
pub(crate) fn api_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIS: [Kind; 5] = [
        Kind::Codex,
        Kind::Claude,
        Kind::Openclaw,
        Kind::Hermes,
        Kind::Aider,
    ];

    #[test]
    fn every_kind_has_its_adapter() {
        for kind in CLIS.into_iter().chain([Kind::Script]) {
            assert_eq!(harness(kind).kind(), kind);
            assert_eq!(harness(kind).install().is_none(), kind == Kind::Script);
        }
    }

    #[test]
    fn a_cli_without_an_endpoint_names_the_field() {
        let run = RunSpec {
            model: Some("m"),
            endpoint: None,
            workdir: "/workspace/r",
            script: None,
        };
        let err = harness(Kind::Codex).invocation(&run).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the `codex` harness needs `agent.endpoint` in the environment file"
        );
    }

    #[test]
    fn every_invocation_is_bash_with_nothing_left_to_fill_in() {
        for kind in CLIS {
            let run = RunSpec {
                model: Some("m'1"),
                endpoint: Some("http://127.0.0.1:18100/v1"),
                workdir: "/workspace/r",
                script: None,
            };
            let inv = harness(kind).invocation(&run).unwrap();
            hangar_testkit::assert_bash_parses(&inv.script, kind.as_str());
            for text in std::iter::once(&inv.script).chain(inv.files.iter().map(|(_, c)| c)) {
                assert!(
                    !text.contains("{RUN_DIR}") && !text.contains("{PREFIX}"),
                    "{kind}: {text}"
                );
            }
            assert!(
                inv.files.iter().all(|(p, _)| p.starts_with(RUN_DIR)),
                "{kind}"
            );
        }
    }

    #[test]
    fn quoting_survives_bash() {
        let nasty = "it's $HOME `id` \"x\"";
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf %s {}", quote(nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), nasty);
    }
}
