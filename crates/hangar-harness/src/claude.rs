//! Claude Code: `claude -p --output-format stream-json`, Anthropic Messages, the key as
//! `x-api-key`. Judged by its `result` event's `is_error` (its `subtype` can say
//! success on a failed run).

use std::collections::HashMap;

use crate::{
    install, json_lines, need, prelude, quote, AgentEvent, EventKind, Harness, HarnessError,
    Install, Invocation, Judged, KeyHeader, Kind, Outputs, RunSpec, Verdict, KEY_VAR, RUN_DIR,
};

pub(crate) struct Claude;

impl Harness for Claude {
    fn kind(&self) -> Kind {
        Kind::Claude
    }

    fn install(&self) -> Option<Install> {
        Some(install::claude())
    }

    fn key_header(&self) -> KeyHeader {
        KeyHeader {
            header: "x-api-key",
            format: "{}",
        }
    }

    fn invocation(&self, run: &RunSpec<'_>) -> Result<Invocation, HarnessError> {
        let endpoint = need(Kind::Claude, "endpoint", run.endpoint)?;
        let model = run
            .model
            .map(|m| format!(" --model {}", quote(m)))
            .unwrap_or_default();
        // It reads CLAUDE.md, not AGENTS.md: the latter goes into its system prompt.
        // As root, bypassing permissions needs IS_SANDBOX=1; in its default mode tools
        // are refused silently.
        let script = format!(
            "{prelude}export CLAUDE_CONFIG_DIR={RUN_DIR}/claude ANTHROPIC_BASE_URL={endpoint} \
             ANTHROPIC_API_KEY=\"${KEY_VAR}\" CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
             CLAUDE_CODE_MAX_RETRIES=0 DISABLE_AUTOUPDATER=1 IS_SANDBOX=1\n\
             extra=()\n\
             if [ -f AGENTS.md ]; then extra=(--append-system-prompt \"$(cat AGENTS.md)\"); fi\n\
             claude -p \"$HANGAR_PROMPT\" --output-format stream-json --verbose \
             --permission-mode bypassPermissions{model} \"${{extra[@]}}\" \
             | tee {RUN_DIR}/events.jsonl\n",
            prelude = prelude(Kind::Claude),
            endpoint = quote(endpoint.trim_end_matches('/')),
        );
        Ok(Invocation {
            files: Vec::new(),
            script,
            outputs: vec!["events.jsonl"],
        })
    }

    fn judge(&self, out: &Outputs) -> Judged {
        let mut events = Vec::new();
        let mut calls: HashMap<String, (String, String)> = HashMap::new();
        let mut result = None;
        for e in json_lines(&out.text("events.jsonl").unwrap_or_default()) {
            match e["type"].as_str() {
                Some("assistant") => {
                    for block in e["message"]["content"].as_array().into_iter().flatten() {
                        match block["type"].as_str() {
                            Some("text") => events.push(AgentEvent::new(
                                EventKind::Message,
                                block["text"].as_str().unwrap_or_default(),
                            )),
                            Some("tool_use") => {
                                let name = block["name"].as_str().unwrap_or_default();
                                let input = &block["input"];
                                let shown = match input["command"].as_str() {
                                    Some(c) if name == "Bash" => c.to_string(),
                                    _ => format!("{name} {input}"),
                                };
                                if let Some(path) = input["file_path"].as_str() {
                                    if matches!(name, "Write" | "Edit" | "MultiEdit") {
                                        events.push(AgentEvent::file(path, "update"));
                                        continue;
                                    }
                                }
                                let id = block["id"].as_str().unwrap_or_default().to_string();
                                calls.insert(id, (name.to_string(), shown));
                            }
                            _ => {}
                        }
                    }
                }
                Some("user") => {
                    for block in e["message"]["content"].as_array().into_iter().flatten() {
                        if block["type"] != "tool_result" {
                            continue;
                        }
                        let id = block["tool_use_id"].as_str().unwrap_or_default();
                        let Some((_, shown)) = calls.remove(id) else {
                            continue;
                        };
                        let output = match &block["content"] {
                            serde_json::Value::String(s) => s.clone(),
                            other => other
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|b| b["text"].as_str())
                                .collect::<Vec<_>>()
                                .join("\n"),
                        };
                        let code = if block["is_error"].as_bool() == Some(true) {
                            1
                        } else {
                            0
                        };
                        events.push(AgentEvent::command(&shown, Some(code), &output));
                    }
                }
                Some("result") => result = Some(e),
                _ => {}
            }
        }
        let verdict = match result {
            Some(r) if r["is_error"].as_bool() == Some(false) => Verdict::Done {
                final_message: r["result"].as_str().map(str::to_string),
            },
            Some(r) => Verdict::Failed {
                message: r["result"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("claude failed ({})", r["subtype"])),
            },
            None => Verdict::Failed {
                message: out.failure("claude"),
            },
        };
        Judged::new(verdict, events)
    }
}
