//! The `script` harness: the environment's (or the task's) bash script is the agent.
//! Its last stdout line is the final message; its exit code is the verdict.

use crate::{
    exited, need, Harness, HarnessError, Install, Invocation, Judged, KeyHeader, Kind, Outputs,
    RunSpec, Verdict, BEARER,
};

pub(crate) struct Script;

impl Harness for Script {
    fn kind(&self) -> Kind {
        Kind::Script
    }

    fn install(&self) -> Option<Install> {
        None
    }

    fn key_header(&self) -> KeyHeader {
        BEARER
    }

    fn invocation(&self, run: &RunSpec<'_>) -> Result<Invocation, HarnessError> {
        Ok(Invocation {
            files: Vec::new(),
            script: need(Kind::Script, "script", run.script)?.to_string(),
            outputs: Vec::new(),
        })
    }

    fn judge(&self, out: &Outputs) -> Judged {
        let verdict = match out.exit_code {
            Some(0) => Verdict::Done {
                final_message: out.last_stdout.clone(),
            },
            code => Verdict::Failed {
                message: exited("the agent script", code),
            },
        };
        Judged::new(verdict, Vec::new())
    }
}
