//! aider: one Chat Completions request, the edit as SEARCH/REPLACE text in the reply, no
//! tools and no event stream. Its exit code is 0 on model failure: judged by its output
//! (a `litellm.` error) and by the workspace (the diff hangar collects).

use crate::{
    install, need, prelude, quote, AgentEvent, EventKind, Harness, HarnessError, Install,
    Invocation, Judged, KeyHeader, Kind, Outputs, RunSpec, Verdict, BEARER, KEY_VAR, RUN_DIR,
};

pub(crate) struct Aider;

impl Harness for Aider {
    fn kind(&self) -> Kind {
        Kind::Aider
    }

    fn install(&self) -> Option<Install> {
        Some(install::aider())
    }

    fn key_header(&self) -> KeyHeader {
        BEARER
    }

    fn invocation(&self, run: &RunSpec<'_>) -> Result<Invocation, HarnessError> {
        let endpoint = need(Kind::Aider, "endpoint", run.endpoint)?;
        let model = format!("openai/{}", run.model.unwrap_or("default"));
        // It would fetch a price table at start without LITELLM_LOCAL_MODEL_COST_MAP. Its
        // histories go to the run's directory: in the workspace they would be in the diff.
        let script = format!(
            "{prelude}export LITELLM_LOCAL_MODEL_COST_MAP=True\n\
             extra=()\n\
             if [ -f AGENTS.md ]; then extra=(--read AGENTS.md); fi\n\
             aider --model {model} --openai-api-base {endpoint} --openai-api-key \"${KEY_VAR}\" \
             --edit-format diff --yes-always --no-git --no-auto-commits \
             --no-show-model-warnings --no-check-update --analytics-disable --no-pretty \
             --no-stream --input-history-file {RUN_DIR}/aider.input.history \
             --chat-history-file {RUN_DIR}/aider.chat.history.md \
             \"${{extra[@]}}\" --message \"$HANGAR_PROMPT\" | tee {RUN_DIR}/aider.out\n",
            prelude = prelude(Kind::Aider),
            model = quote(&model),
            endpoint = quote(endpoint),
        );
        Ok(Invocation {
            files: Vec::new(),
            script,
            outputs: vec!["aider.out"],
        })
    }

    fn judge(&self, out: &Outputs) -> Judged {
        let text = out.text("aider.out").unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut events = Vec::new();
        let mut error = None;
        for (i, line) in lines.iter().enumerate() {
            if let Some(path) = line.strip_prefix("Applied edit to ") {
                events.push(AgentEvent::file(path.trim(), "update"));
            } else if line.starts_with("litellm.") && error.is_none() {
                // Its message is wrapped over lines up to a blank one.
                let message: Vec<&str> = lines[i..]
                    .iter()
                    .take_while(|l| !l.trim().is_empty())
                    .map(|l| l.trim())
                    .collect();
                error = Some(message.join(" "));
            }
        }
        // The reply's last paragraph, just before its token count.
        let final_message = lines
            .iter()
            .position(|l| l.starts_with("Tokens: "))
            .map(|end| {
                let para: Vec<&str> = lines[..end]
                    .iter()
                    .rev()
                    .skip_while(|l| l.trim().is_empty())
                    .take_while(|l| !l.trim().is_empty() && !l.starts_with("```"))
                    .copied()
                    .collect();
                para.into_iter().rev().collect::<Vec<_>>().join("\n")
            })
            .filter(|m| !m.is_empty());
        if let Some(m) = &final_message {
            events.push(AgentEvent::new(EventKind::Message, m));
        }
        let verdict = match (error, out.exit_code) {
            (Some(message), _) => Verdict::Failed { message },
            (None, Some(0)) => Verdict::Done { final_message },
            (None, _) => Verdict::Failed {
                message: out.failure("aider"),
            },
        };
        Judged::new(verdict, events)
    }
}
