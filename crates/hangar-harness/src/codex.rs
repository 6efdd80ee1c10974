//! Codex CLI: `codex exec --json`, the Responses API, a provider of hangar's in
//! `$CODEX_HOME/config.toml`. Judged by its `turn.completed` or `turn.failed` event.

use crate::{
    api_message, install, json_lines, json_str, need, prelude, AgentEvent, EventKind, Harness,
    HarnessError, Install, Invocation, Judged, KeyHeader, Kind, Outputs, RunSpec, Verdict, BEARER,
    KEY_VAR, RUN_DIR,
};

pub(crate) struct Codex;

impl Harness for Codex {
    fn kind(&self) -> Kind {
        Kind::Codex
    }

    fn install(&self) -> Option<Install> {
        Some(install::codex())
    }

    fn key_header(&self) -> KeyHeader {
        BEARER
    }

    fn invocation(&self, run: &RunSpec<'_>) -> Result<Invocation, HarnessError> {
        let endpoint = need(Kind::Codex, "endpoint", run.endpoint)?;
        let mut config = String::new();
        if let Some(m) = run.model {
            config.push_str(&format!("model = {}\n", json_str(m)));
        }
        // Nothing but the model is reached: the update check, the plugin and app syncs
        // (github.com, chatgpt.com) and analytics would each be a connection the proxy
        // refuses, on the run's clock.
        config.push_str(&format!(
            "model_provider = \"hangar\"\ncheck_for_update_on_startup = false\n\n\
             [features]\nplugins = false\napps = false\n\n[analytics]\nenabled = false\n\n\
             [model_providers.hangar]\nname = \"hangar\"\n\
             base_url = {}\nenv_key = \"{KEY_VAR}\"\nwire_api = \"responses\"\n",
            json_str(endpoint)
        ));
        // The outer sandbox isolates it: its own sandbox and approvals are off.
        let script = format!(
            "{prelude}export CODEX_HOME={RUN_DIR}/codex\n\
             codex exec --json --ephemeral --skip-git-repo-check \
             --dangerously-bypass-approvals-and-sandbox -C {workdir} \
             -o {RUN_DIR}/last_message.txt \"$HANGAR_PROMPT\" | tee {RUN_DIR}/events.jsonl\n",
            prelude = prelude(Kind::Codex),
            workdir = crate::quote(run.workdir),
        );
        Ok(Invocation {
            files: vec![(format!("{RUN_DIR}/codex/config.toml"), config)],
            script,
            outputs: vec!["events.jsonl", "last_message.txt"],
        })
    }

    fn judge(&self, out: &Outputs) -> Judged {
        let mut events = Vec::new();
        let mut completed = false;
        let mut failed = None;
        let mut last_message = None;
        for e in json_lines(&out.text("events.jsonl").unwrap_or_default()) {
            match e["type"].as_str() {
                Some("item.completed") => {
                    let item = &e["item"];
                    match item["type"].as_str() {
                        Some("agent_message") => {
                            let text = item["text"].as_str().unwrap_or_default();
                            last_message = Some(text.to_string());
                            events.push(AgentEvent::new(EventKind::Message, text));
                        }
                        Some("command_execution") => events.push(AgentEvent::command(
                            item["command"].as_str().unwrap_or_default(),
                            item["exit_code"].as_i64().map(|c| c as i32),
                            item["aggregated_output"].as_str().unwrap_or_default(),
                        )),
                        Some("file_change") => {
                            for c in item["changes"].as_array().into_iter().flatten() {
                                events.push(AgentEvent::file(
                                    c["path"].as_str().unwrap_or_default(),
                                    c["kind"].as_str().unwrap_or("update"),
                                ));
                            }
                        }
                        Some("error") => events.push(AgentEvent::new(
                            EventKind::Error,
                            api_message(item["message"].as_str().unwrap_or_default()),
                        )),
                        _ => {}
                    }
                }
                Some("error") => events.push(AgentEvent::new(
                    EventKind::Error,
                    api_message(e["message"].as_str().unwrap_or_default()),
                )),
                Some("turn.completed") => completed = true,
                Some("turn.failed") => {
                    failed = Some(api_message(
                        e["error"]["message"].as_str().unwrap_or("the turn failed"),
                    ))
                }
                _ => {}
            }
        }
        let final_message = out
            .text("last_message.txt")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .or(last_message);
        let verdict = match (failed, completed, out.exit_code) {
            (Some(message), _, _) => Verdict::Failed { message },
            (None, true, Some(0)) => Verdict::Done { final_message },
            (None, _, _) => Verdict::Failed {
                message: out.failure("codex"),
            },
        };
        Judged::new(verdict, events)
    }
}
