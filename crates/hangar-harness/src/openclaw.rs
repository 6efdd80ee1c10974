//! OpenClaw: `openclaw agent exec --json` (headless, no gateway) with a config naming a
//! provider of hangar's. Judged by its JSON envelope's `ok`; its commands are read from
//! the transcript in its state directory, which it keeps when given one.

use crate::{
    fill_key, install, json_str, need, prelude, quote, AgentEvent, EventKind, Harness,
    HarnessError, Install, Invocation, Judged, KeyHeader, Kind, Outputs, RunSpec, Verdict, BEARER,
    KEY_MARK, PROMPT_WITH_AGENTS_MD, RUN_DIR,
};

pub(crate) struct OpenClaw;

/// Stands for the key in the config file until the script fills it in.
/// Copies the transcript's messages out of the state database, as JSON lines
/// (`{RUN_DIR}` stands for [`RUN_DIR`]).
const DUMP: &str = r#"python3 - "$state" > {RUN_DIR}/transcript.jsonl <<'PY' || true
import glob, sqlite3, sys
for db in glob.glob(sys.argv[1] + "/agents/*/agent/*.sqlite"):
    try:
        for (e,) in sqlite3.connect(db).execute("select event_json from transcript_events order by seq"):
            print(e)
    except sqlite3.Error:
        pass
PY
"#;

impl Harness for OpenClaw {
    fn kind(&self) -> Kind {
        Kind::Openclaw
    }

    fn install(&self) -> Option<Install> {
        Some(install::openclaw())
    }

    fn key_header(&self) -> KeyHeader {
        BEARER
    }

    fn invocation(&self, run: &RunSpec<'_>) -> Result<Invocation, HarnessError> {
        let endpoint = need(Kind::Openclaw, "endpoint", run.endpoint)?;
        let model = run.model.unwrap_or("default");
        let config = format!(
            "{{\n  models: {{ providers: {{ hangar: {{\n    baseUrl: {endpoint},\n    \
             apiKey: \"{KEY_MARK}\",\n    api: \"openai-completions\",\n    \
             models: [{{ id: {m}, name: {m}, contextWindow: 128000, maxTokens: 8192 }}],\n  \
             }} }} }},\n  agents: {{ defaults: {{ model: {{ primary: {primary} }} }} }},\n}}\n",
            endpoint = json_str(endpoint),
            m = json_str(model),
            primary = json_str(&format!("hangar/{model}")),
        );
        let cfg = format!("{RUN_DIR}/openclaw/config.json5");
        let script = format!(
            "{prelude}{PROMPT_WITH_AGENTS_MD}state={RUN_DIR}/openclaw/state\nmkdir -p \"$state\"\n\
             {fill}set +e\n\
             openclaw agent exec --config {cfg} --state-dir \"$state\" --cwd {workdir} \
             --model {primary} --json \"$prompt\" > {RUN_DIR}/envelope.json\n\
             code=$?\nset -e\ncat {RUN_DIR}/envelope.json\n{dump}exit $code\n",
            dump = DUMP.replace("{RUN_DIR}", RUN_DIR),
            prelude = prelude(Kind::Openclaw),
            fill = fill_key(&cfg),
            workdir = quote(run.workdir),
            primary = quote(&format!("hangar/{model}")),
        );
        Ok(Invocation {
            files: vec![(cfg, config)],
            script,
            outputs: vec!["envelope.json", "transcript.jsonl"],
        })
    }

    fn judge(&self, out: &Outputs) -> Judged {
        let mut events = Vec::new();
        let mut calls = std::collections::HashMap::new();
        for e in crate::json_lines(&out.text("transcript.jsonl").unwrap_or_default()) {
            let m = &e["message"];
            if e["type"] != "message" {
                continue;
            }
            for block in m["content"].as_array().into_iter().flatten() {
                match (m["role"].as_str(), block["type"].as_str()) {
                    (Some("assistant"), Some("text")) => events.push(AgentEvent::new(
                        EventKind::Message,
                        block["text"].as_str().unwrap_or_default(),
                    )),
                    (Some("assistant"), Some("toolCall")) => {
                        let args = &block["arguments"];
                        let shown = args["command"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{} {args}", block["name"]));
                        calls.insert(block["id"].as_str().unwrap_or_default().to_string(), shown);
                    }
                    _ => {}
                }
            }
            if m["role"] == "toolResult" {
                let id = m["toolCallId"].as_str().unwrap_or_default();
                let shown = calls
                    .remove(id)
                    .unwrap_or_else(|| m["toolName"].as_str().unwrap_or("tool").to_string());
                let d = &m["details"];
                let code = d["exitCode"]
                    .as_i64()
                    .map(|c| c as i32)
                    .or(m["isError"].as_bool().map(i32::from));
                events.push(AgentEvent::command(
                    &shown,
                    code,
                    d["aggregated"].as_str().unwrap_or_default(),
                ));
            }
        }
        let envelope = out
            .text("envelope.json")
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let verdict = match envelope {
            Some(env) if env["ok"].as_bool() == Some(true) => Verdict::Done {
                final_message: env["final"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            },
            Some(env) => Verdict::Failed {
                message: env["error"]["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("openclaw ended with status {}", env["status"])),
            },
            None => Verdict::Failed {
                message: out.failure("openclaw"),
            },
        };
        Judged::new(verdict, events)
    }
}
