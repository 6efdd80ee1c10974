//! Whether a task request can run as asked: pure functions over the environment it runs
//! in, the request and the engine's limits, so every rule is tested as a table. What
//! needs the store, the network or the secrets (the environment's lookup, its
//! destinations, a followed repository file, unset secrets) is `Engine::submit`'s.

use hangar_spec::{Approval, Environment, Harness, TaskId};

use crate::TaskRequest;

/// The engine's limits a request is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Best-of-N's most attempts per task.
    pub max_attempts: u32,
}

/// What is wrong with a task request; reads after "failed to start the task: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("give a branch or a commit, not both")]
    BranchAndCommit,
    #[error("`{0}` is not a valid branch name")]
    Branch(String),
    #[error("`{0}` is not a commit id (4 to 64 hex digits)")]
    Commit(String),
    #[error("{asked} attempts asked for; a task runs at most {max}")]
    TooManyAttempts { asked: u32, max: u32 },
    #[error(
        "environment `{env}` has no [agent] script; give one with --script FILE, or choose \
         an agent CLI with --harness"
    )]
    NoScript { env: String },
    #[error(
        "the `{harness}` harness needs the model's endpoint: set [agent] endpoint in \
         environment `{env}`"
    )]
    NoEndpoint { harness: Harness, env: String },
    #[error(
        "[agent] endpoint of environment `{env}` is https on the host's loopback; use http \
         there (the sandbox reaches it through hangar)"
    )]
    LoopbackTls { env: String },
    #[error(
        "a follow-up of task {source_task} runs in its environment `{source_env}`, not `{asked}`"
    )]
    FollowUpElsewhere {
        source_task: TaskId,
        source_env: String,
        asked: String,
    },
    #[error("a follow-up continues on its source's checkout: no --branch or --commit")]
    FollowUpCheckout,
}

/// A follow-up request against its source task (`task`, in environment `env`): it runs in
/// that environment, on that checkout.
pub(crate) fn follow_up(req: &TaskRequest, task: &TaskId, env: &str) -> Result<(), Invalid> {
    if !req.environment.is_empty() && req.environment != env {
        return Err(Invalid::FollowUpElsewhere {
            source_task: task.clone(),
            source_env: env.to_string(),
            asked: req.environment.clone(),
        });
    }
    if req.branch.is_some() || req.commit.is_some() {
        return Err(Invalid::FollowUpCheckout);
    }
    Ok(())
}

/// A request in environment `env` (as it will run: after following its repository's
/// file); how many attempts it runs.
pub(crate) fn task(env: &Environment, req: &TaskRequest, limits: Limits) -> Result<u32, Invalid> {
    if req.prompt.trim().is_empty() {
        return Err(Invalid::EmptyPrompt);
    }
    if req.branch.is_some() && req.commit.is_some() {
        return Err(Invalid::BranchAndCommit);
    }
    if let Some(b) = &req.branch {
        hangar_spec::check_branch(b).map_err(|_| Invalid::Branch(b.clone()))?;
    }
    if let Some(c) = &req.commit {
        if !(4..=64).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Invalid::Commit(c.clone()));
        }
    }
    let attempts = req.attempts.max(1);
    if attempts > limits.max_attempts {
        return Err(Invalid::TooManyAttempts {
            asked: attempts,
            max: limits.max_attempts,
        });
    }
    let agent = effective_agent(env, req.harness, req.approval, req.script.as_deref());
    let name = env.name.to_string();
    if agent.harness == Harness::Script && agent.script.is_none() {
        return Err(Invalid::NoScript { env: name });
    }
    if agent.harness != Harness::Script {
        if agent.endpoint.is_none() {
            return Err(Invalid::NoEndpoint {
                harness: agent.harness,
                env: name,
            });
        }
        if let Some((rule, true)) = agent.endpoint_rule() {
            if rule.loopback_ip().is_some() {
                return Err(Invalid::LoopbackTls { env: name });
            }
        }
    }
    Ok(attempts)
}

/// The environment's `[agent]` with a task's choices over it.
pub(crate) fn effective_agent(
    env: &Environment,
    harness: Option<Harness>,
    approval: Option<Approval>,
    script: Option<&str>,
) -> hangar_spec::Agent {
    let mut agent = env.agent.clone();
    if let Some(h) = harness {
        agent.harness = h;
    }
    if let Some(a) = approval {
        agent.approval = a;
    }
    if let Some(s) = script {
        agent.script = Some(s.to_string());
    }
    agent
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_attempts: 4 };

    /// An environment named `e` whose `[agent]` table is `agent`.
    fn env(agent: &str) -> Environment {
        let src = format!("name = \"e\"\nrepo = \"https://git.test/r\"\n[agent]\n{agent}\n");
        Environment::parse("e.toml", &src).unwrap()
    }

    fn req(prompt: &str) -> TaskRequest {
        TaskRequest {
            environment: "e".into(),
            prompt: prompt.into(),
            ..TaskRequest::default()
        }
    }

    /// `expected`: the attempts the request runs, or its error's message.
    fn check(input: (&Environment, TaskRequest), expected: Result<u32, &str>) {
        let (env, req) = input;
        let got = task(env, &req, LIMITS).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "{req:?}");
    }

    #[test]
    fn requests_are_checked_against_the_environment_and_the_limits() {
        let script = env("script = 'true'");
        let bare = env("");
        let codex = env("harness = 'codex'\nendpoint = 'https://api.test/v1'");
        let codex_nowhere = env("harness = 'codex'");
        let codex_loopback_tls = env("harness = 'codex'\nendpoint = 'https://127.0.0.1:8080/v1'");
        let codex_loopback = env("harness = 'codex'\nendpoint = 'http://127.0.0.1:8080/v1'");
        let with = |f: fn(&mut TaskRequest)| {
            let mut r = req("fix it");
            f(&mut r);
            r
        };
        check((&script, req("fix it")), Ok(1));
        check((&script, req(" \n\t")), Err("the prompt is empty"));
        check(
            (
                &script,
                with(|r| {
                    r.branch = Some("main".into());
                    r.commit = Some("abcd".into());
                }),
            ),
            Err("give a branch or a commit, not both"),
        );
        check(
            (&script, with(|r| r.branch = Some("feature/x".into()))),
            Ok(1),
        );
        check(
            (&script, with(|r| r.branch = Some("a..b".into()))),
            Err("`a..b` is not a valid branch name"),
        );
        check((&script, with(|r| r.commit = Some("AbC1".into()))), Ok(1));
        check(
            (&script, with(|r| r.commit = Some("abc".into()))),
            Err("`abc` is not a commit id (4 to 64 hex digits)"),
        );
        check(
            (&script, with(|r| r.commit = Some("xyz1".into()))),
            Err("`xyz1` is not a commit id (4 to 64 hex digits)"),
        );
        check(
            (&script, with(|r| r.commit = Some("a".repeat(65)))),
            Err(&format!(
                "`{}` is not a commit id (4 to 64 hex digits)",
                "a".repeat(65)
            )),
        );
        check((&script, with(|r| r.attempts = 0)), Ok(1));
        check((&script, with(|r| r.attempts = 4)), Ok(4));
        check(
            (&script, with(|r| r.attempts = 5)),
            Err("5 attempts asked for; a task runs at most 4"),
        );
        check(
            (&bare, req("fix it")),
            Err(
                "environment `e` has no [agent] script; give one with --script FILE, or \
                 choose an agent CLI with --harness",
            ),
        );
        check((&bare, with(|r| r.script = Some("true".into()))), Ok(1));
        check(
            (&bare, with(|r| r.harness = Some(Harness::Codex))),
            Err(
                "the `codex` harness needs the model's endpoint: set [agent] endpoint in \
                 environment `e`",
            ),
        );
        check((&codex, req("fix it")), Ok(1));
        check(
            (&codex, with(|r| r.harness = Some(Harness::Script))),
            Err(
                "environment `e` has no [agent] script; give one with --script FILE, or \
                 choose an agent CLI with --harness",
            ),
        );
        check(
            (&codex_nowhere, req("fix it")),
            Err(
                "the `codex` harness needs the model's endpoint: set [agent] endpoint in \
                 environment `e`",
            ),
        );
        check(
            (&codex_loopback_tls, req("fix it")),
            Err(
                "[agent] endpoint of environment `e` is https on the host's loopback; use \
                 http there (the sandbox reaches it through hangar)",
            ),
        );
        check((&codex_loopback, req("fix it")), Ok(1));
        // The first problem is the one told.
        check(
            (&bare, with(|r| r.prompt = String::new())),
            Err("the prompt is empty"),
        );
    }

    #[test]
    fn a_follow_up_runs_in_its_sources_environment_and_checkout() {
        let source: TaskId = "0123456789ab".parse().unwrap();
        let check = |req: TaskRequest, expected: Result<(), &str>| {
            let got = follow_up(&req, &source, "e").map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_string), "{req:?}");
        };
        check(req("more"), Ok(()));
        check(
            TaskRequest {
                environment: String::new(),
                ..req("more")
            },
            Ok(()),
        );
        check(
            TaskRequest {
                environment: "other".into(),
                ..req("more")
            },
            Err("a follow-up of task 0123456789ab runs in its environment `e`, not `other`"),
        );
        for (branch, commit) in [(Some("main"), None), (None, Some("abcd"))] {
            check(
                TaskRequest {
                    branch: branch.map(str::to_string),
                    commit: commit.map(str::to_string),
                    ..req("more")
                },
                Err("a follow-up continues on its source's checkout: no --branch or --commit"),
            );
        }
    }
}
