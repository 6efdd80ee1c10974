//! Hermes agent: `hermes -z` with `$HERMES_HOME/config.yaml` naming a custom provider
//! (it ignores environment variables for this). Its exit code is 0 on model failure:
//! judged by its usage file's `completed`/`failed`. Commands come from its session
//! database, and it reads AGENTS.md from the working directory itself.

use crate::{
    fill_key, install, json_lines, json_str, need, prelude, AgentEvent, EventKind, Harness,
    HarnessError, Install, Invocation, Judged, KeyHeader, Kind, Outputs, RunSpec, Verdict, BEARER,
    KEY_MARK, RUN_DIR,
};

pub(crate) struct Hermes;

const DUMP: &str = r#"{PREFIX}/venv/bin/python - "$HERMES_HOME/state.db" > {RUN_DIR}/messages.jsonl <<'PY' || true
import json, sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "select role, content, tool_calls, tool_call_id from messages order by id")
for role, content, calls, call_id in rows:
    print(json.dumps({"role": role, "content": content, "tool_calls": calls, "tool_call_id": call_id}))
PY
"#;

impl Harness for Hermes {
    fn kind(&self) -> Kind {
        Kind::Hermes
    }

    fn install(&self) -> Option<Install> {
        Some(install::hermes())
    }

    fn key_header(&self) -> KeyHeader {
        BEARER
    }

    fn invocation(&self, run: &RunSpec<'_>) -> Result<Invocation, HarnessError> {
        let endpoint = need(Kind::Hermes, "endpoint", run.endpoint)?;
        let config = format!(
            "model:\n  provider: custom\n  base_url: {}\n  default: {}\n  api_key: \"{KEY_MARK}\"\n",
            json_str(endpoint),
            json_str(run.model.unwrap_or("default")),
        );
        // `-z` prints only the final text and never asks for an approval, which would
        // hang an unattended run.
        let script = format!(
            "{prelude}export HERMES_HOME={RUN_DIR}/hermes\n\
             {fill}set +e\n\
             hermes -z \"$HANGAR_PROMPT\" --usage-file {RUN_DIR}/usage.json | tee {RUN_DIR}/final.txt\n\
             code=$?\nset -e\n{dump}exit $code\n",
            dump = DUMP.replace("{RUN_DIR}", RUN_DIR).replace("{PREFIX}", &install::prefix(Kind::Hermes)),
            prelude = prelude(Kind::Hermes),
            fill = fill_key("\"$HERMES_HOME/config.yaml\""),
        );
        Ok(Invocation {
            files: vec![(format!("{RUN_DIR}/hermes/config.yaml"), config)],
            script,
            outputs: vec!["usage.json", "final.txt", "messages.jsonl"],
        })
    }

    fn judge(&self, out: &Outputs) -> Judged {
        let mut events = Vec::new();
        let mut calls = std::collections::HashMap::new();
        for m in json_lines(&out.text("messages.jsonl").unwrap_or_default()) {
            let content = m["content"].as_str().unwrap_or_default();
            match m["role"].as_str() {
                Some("assistant") => {
                    if !content.trim().is_empty() {
                        events.push(AgentEvent::new(EventKind::Message, content));
                    }
                    let listed = m["tool_calls"]
                        .as_str()
                        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
                    for c in listed
                        .as_ref()
                        .and_then(|l| l.as_array())
                        .into_iter()
                        .flatten()
                    {
                        let f = &c["function"];
                        let args = f["arguments"]
                            .as_str()
                            .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
                            .unwrap_or_default();
                        let shown = args["command"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{} {args}", f["name"]));
                        calls.insert(c["id"].as_str().unwrap_or_default().to_string(), shown);
                    }
                }
                Some("tool") => {
                    let id = m["tool_call_id"].as_str().unwrap_or_default();
                    let shown = calls.remove(id).unwrap_or_else(|| "tool".into());
                    let result: serde_json::Value =
                        serde_json::from_str(content).unwrap_or_default();
                    events.push(AgentEvent::command(
                        &shown,
                        result["exit_code"].as_i64().map(|c| c as i32),
                        result["output"].as_str().unwrap_or(content),
                    ));
                }
                _ => {}
            }
        }
        let printed = out.text("final.txt").unwrap_or_default().trim().to_string();
        let usage = out
            .text("usage.json")
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let verdict = match usage {
            Some(u) if u["completed"] == true && u["failed"] != true => Verdict::Done {
                final_message: (!printed.is_empty()).then_some(printed),
            },
            Some(_) if !printed.is_empty() => Verdict::Failed { message: printed },
            _ => Verdict::Failed {
                message: out.failure("hermes"),
            },
        };
        Judged::new(verdict, events)
    }
}
