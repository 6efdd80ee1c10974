//! The forge in the engine: an attempt's diff made a commit on the host's mirror, pushed
//! and opened as a pull request (`hangar pr`); a webhook delivery checked against the
//! environments that listen for one and turned into a task; and what such a task owes
//! the forge when it ends (a comment, a pull request, a review).
//!
//! The forge's token is a secret of the environment that only this module decrypts, for
//! the one push or API call that needs it; no phase of an attempt gets it unless the
//! environment's owner declared it for one.

use std::sync::Arc;

use hangar_forge::github::{GitHub, GitHubConfig};
use hangar_forge::mention::{self, Mention};
use hangar_forge::text::{self, AttemptLine, Outcome};
pub use hangar_forge::webhook::WebhookError;
use hangar_forge::webhook::{self, CommentPlace, Hook};
pub use hangar_forge::ForgeError;
use hangar_forge::{Forge as _, NewPull, PullRequest, RepoName};
use hangar_secrets::Secret;
use hangar_spec::{check_branch, Approval, Environment, Forge, TaskId, Workspace};
use hangar_store::db::{now_ms, AttemptRecord, PullRecord, TriggerRecord};

use crate::error::{EngineError, Result};
use crate::push::{CommitRequest, Identity, Push};
use crate::runner::Runner;
use crate::{best, Engine, Task, TaskRequest};

/// How many lines of a failed job's log an autofix prompt quotes.
const LOG_TAIL_LINES: usize = 60;

/// The longest `Retry-After` hangar waits out before a forge call fails.
const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What `hangar pr` asks for.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The attempt; `None`: the best ready one.
    pub attempt: Option<u32>,
    /// The branch to push; `None`: `hangar/<task>-<attempt>`.
    pub branch: Option<String>,
    /// The branch the pull request goes into; `None`: the task's branch, else the
    /// environment's default branch.
    pub base: Option<String>,
    pub draft: bool,
}

/// The branch pushed for an attempt and its pull request.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: PullRecord,
    /// Whether this call pushed or opened anything (`false`: all of it was there).
    pub new: bool,
    /// Whether the environment names a forge; without one only the branch is pushed.
    pub forge: bool,
}

/// A webhook delivery as the API received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-GitHub-Event`.
    pub event: String,
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// `X-Hub-Signature-256`.
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Work was started (or a polite refusal posted); the sentence says which.
    Accepted(String),
    /// Nothing to do: an event, action or comment hangar does not act on.
    Ignored(String),
    /// Its id was heard before.
    Duplicate,
    /// Signed by an environment that does not serve the payload's repository.
    NotServed(String),
}

/// An environment that listens for webhooks, with the view of its workspace.
struct Listening {
    view: Engine,
    env: Environment,
    forge: Forge,
}

impl Listening {
    /// Its forge's client, with its token.
    async fn client(&self) -> Result<GitHub> {
        let token = self
            .view
            .forge_secret(&self.env.name.to_string(), &self.forge.token)
            .await?;
        self.view.github(&self.forge, token)
    }
}

impl Engine {
    /// Pushes an attempt's diff as a branch and opens its pull request (when the
    /// environment names a forge); a second call for the same attempt returns the first
    /// one's branch and pull request.
    pub async fn open_pull(&self, task: &Task, opts: &PullOptions) -> Result<Pulled> {
        self.mine(task)?;
        let rec = task.record();
        let env = self.task_env(task).await?;
        let attempts = self.attempts(task).await?;
        let n = match opts.attempt {
            Some(n) => n,
            None => best::best(&attempts).ok_or_else(|| EngineError::NothingToPull {
                task: rec.id.clone(),
                why: "no attempt is ready (name one with --attempt)".into(),
            })?,
        };
        let attempt =
            attempts
                .iter()
                .find(|a| a.index == n)
                .ok_or_else(|| EngineError::NothingToPull {
                    task: rec.id.clone(),
                    why: format!("it has no attempt {n} ({} attempts)", attempts.len()),
                })?;
        let token = match &env.forge {
            Some(f) => Some(self.forge_secret(&rec.environment, &f.token).await?),
            None => None,
        };
        if let Some(existing) = self.db.pull_request(&rec.id, n).await? {
            return self
                .finish_pull(task, &env, token.as_ref(), existing, &attempts, opts.draft)
                .await;
        }

        let diff = self.diff(task, n).await?.unwrap_or_default();
        let (Some(base_commit), false) = (attempt.base_commit.as_deref(), diff.is_empty()) else {
            return Err(EngineError::NothingToPull {
                task: rec.id.clone(),
                why: format!("attempt {n} changed no files"),
            });
        };
        let base = opts
            .base
            .clone()
            .or_else(|| rec.branch.clone())
            .unwrap_or_else(|| env.default_branch.clone());
        let branch = opts
            .branch
            .clone()
            .unwrap_or_else(|| format!("hangar/{}-{n}", short(&rec.id)));
        for (what, b) in [("--branch", &branch), ("--base", &base)] {
            check_branch(b).map_err(|message| EngineError::PullBranch {
                what,
                branch: b.clone(),
                message,
            })?;
        }
        // A pull request proposes; it never lands on the branch it proposes to.
        if branch == base || branch == env.default_branch {
            return Err(EngineError::PullBranch {
                what: "--branch",
                branch,
                message: "is the branch the change is proposed to; hangar pushes only a branch \
                          of its own"
                    .into(),
            });
        }
        let author = identity(
            env.forge
                .as_ref()
                .map_or(hangar_spec::DEFAULT_AUTHOR, |f| f.author.as_str()),
        )?;
        let message = format!(
            "{}\n\nhangar task {}, attempt {n}\n",
            text::pull_title(&rec.prompt),
            rec.id
        );
        let reach = self.check_repo(&env.repo).await?;
        let mirrors = self.mirrors.clone();
        let (repo, base_commit, tree) = (
            env.repo.clone(),
            base_commit.to_string(),
            attempt.result_tree.clone(),
        );
        let (commit_branch, commit_token) = (branch.clone(), token.clone());
        let committed = tokio::task::spawn_blocking(move || -> Result<String> {
            mirrors.sync(&repo, &reach)?;
            let committed = mirrors.commit_patch(
                &repo,
                &CommitRequest {
                    base: &base_commit,
                    patch: &diff,
                    message: &message,
                    author: &author,
                },
            )?;
            if let Some(tree) = tree.filter(|t| *t != committed.tree) {
                return Err(EngineError::TreeMismatch {
                    expected: tree,
                    got: committed.tree,
                });
            }
            mirrors.push(
                &repo,
                &Push {
                    url: &repo,
                    commit: &committed.commit,
                    branch: &commit_branch,
                    token: commit_token.as_ref(),
                    reach: &reach,
                },
            )?;
            Ok(committed.commit)
        })
        .await
        .map_err(|e| EngineError::Background(e.to_string()))??;
        let record = self
            .db
            .record_push(&PullRecord {
                task: rec.id.clone(),
                attempt: n,
                branch,
                base,
                commit: committed,
                number: None,
                url: None,
                created_ms: now_ms(),
            })
            .await?;
        let mut pulled = self
            .finish_pull(task, &env, token.as_ref(), record, &attempts, opts.draft)
            .await?;
        pulled.new = true;
        Ok(pulled)
    }

    /// Opens the pull request of a pushed branch unless it is open already.
    async fn finish_pull(
        &self,
        task: &Task,
        env: &Environment,
        token: Option<&Secret>,
        mut record: PullRecord,
        attempts: &[AttemptRecord],
        draft: bool,
    ) -> Result<Pulled> {
        let (Some(forge), Some(token)) = (&env.forge, token) else {
            return Ok(Pulled {
                record,
                new: false,
                forge: false,
            });
        };
        if record.url.is_some() {
            return Ok(Pulled {
                record,
                new: false,
                forge: true,
            });
        }
        let repo = RepoName::parse(&forge.repository)?;
        let client = self.github(forge, token.clone())?;
        let outcome = self.outcome(task, attempts, record.attempt);
        let pull = match client
            .find_pull(&repo, &record.branch, &record.base)
            .await?
        {
            Some(p) => p,
            None => {
                let new = NewPull {
                    title: text::title(&outcome),
                    body: text::pull_body(&outcome),
                    head: record.branch.clone(),
                    base: record.base.clone(),
                    draft,
                };
                match client.open_pull(&repo, &new).await {
                    Ok(p) => p,
                    Err(ForgeError::PullExists { .. }) => client
                        .find_pull(&repo, &record.branch, &record.base)
                        .await?
                        .ok_or(ForgeError::PullExists {
                            head: record.branch.clone(),
                            base: record.base.clone(),
                        })?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        self.db
            .record_pull(&record.task, record.attempt, pull.number, &pull.url)
            .await?;
        record.number = Some(pull.number);
        record.url = Some(pull.url);
        Ok(Pulled {
            record,
            new: true,
            forge: true,
        })
    }

    /// The environment a task ran in, as stored with it, with the `[forge]` its
    /// environment names now (a forge connected after the task still gets its pull
    /// request), unless the environment has since moved to another repository.
    async fn task_env(&self, task: &Task) -> Result<Environment> {
        let rec = task.record();
        let mut env = Environment::parse(&format!("task {}'s environment", rec.id), &rec.spec)?;
        if let Ok((_, now)) = self.env(&rec.environment).await {
            if now.repo == env.repo {
                env.forge = now.forge;
            }
        }
        Ok(env)
    }

    /// A task's pushed branches and pull requests.
    pub async fn pull_requests(&self, task: &Task) -> Result<Vec<PullRecord>> {
        Ok(self.db.pull_requests(self.mine(task)?).await?)
    }

    /// Declares the forge of an environment: `[forge]` with its two secrets (declared for
    /// no phase), and the webhook secret's value. The token's value is set apart
    /// (`hangar secret set`), so it never crosses this call.
    pub async fn connect_forge(&self, name: &str, connect: &ForgeConnect) -> Result<Environment> {
        let (_, mut env) = self.env(name).await?;
        for secret in [&connect.token_secret, &connect.webhook_secret_name] {
            env.secrets
                .entry(secret.clone())
                .or_insert(hangar_spec::SecretDecl {
                    inject: None,
                    phases: Vec::new(),
                });
        }
        let previous = env.forge.take();
        let mut file = env.to_toml();
        file.push_str("\n[forge]\nkind = \"github\"\n");
        let mut line = |key: &str, value: String| file.push_str(&format!("{key} = {value}\n"));
        let repository = connect
            .repository
            .clone()
            .or(previous.as_ref().map(|f| f.repository.clone()));
        if let Some(r) = repository {
            line("repository", toml_str(&r));
        }
        if let Some(api) = connect
            .api
            .clone()
            .or(previous.as_ref().map(|f| f.api.clone()))
        {
            line("api", toml_str(&api));
        }
        line("token", toml_str(&connect.token_secret));
        line("webhook_secret", toml_str(&connect.webhook_secret_name));
        if let Some(p) = &previous {
            let list = |v: &[String]| {
                let items: Vec<String> = v.iter().map(|t| toml_str(t)).collect();
                format!("[{}]", items.join(", "))
            };
            line("mention", toml_str(&p.mention));
            line("author", toml_str(&p.author));
            line("trusted", list(&p.trusted));
            line("autofix", list(&p.autofix));
        }
        let file_name = format!("environment `{name}` with [forge]");
        self.update_env(name, &file_name, &file, std::path::Path::new("/"))
            .await?;
        self.secret_set(name, &connect.webhook_secret_name, &connect.webhook_secret)
            .await?;
        Ok(self.env(name).await?.1)
    }

    /// A secret the forge uses, decrypted; unset is an error naming the command that
    /// sets it.
    async fn forge_secret(&self, env: &str, name: &str) -> Result<Secret> {
        let rows = self.db.secrets(&self.workspace, env).await?;
        let row =
            rows.iter()
                .find(|r| r.name == name)
                .ok_or_else(|| EngineError::ForgeSecretUnset {
                    env: env.to_string(),
                    name: name.to_string(),
                })?;
        Ok(self.keyring()?.decrypt(name, &row.ciphertext)?)
    }

    /// The forge's client: its TLS verified as the proxies verify servers (the host's
    /// roots and the admin's CAs).
    fn github(&self, forge: &Forge, token: Secret) -> Result<GitHub> {
        Ok(GitHub::new(GitHubConfig {
            api: forge.api.clone(),
            token,
            tls: self.net.config()?.proxy.upstream_tls,
            max_retry_wait: MAX_RETRY_WAIT,
            tries: 4,
        })?)
    }

    /// A finished task as the forge's text shows it, for attempt `n`.
    fn outcome(&self, task: &Task, attempts: &[AttemptRecord], n: u32) -> Outcome {
        let rec = task.record();
        let order = best::rank(attempts);
        let best = best::best(attempts);
        let check = |a: &AttemptRecord| {
            a.check.map(|c| match (c.passed, c.exit_code) {
                (true, _) => "passed".to_string(),
                (false, Some(code)) => format!("failed (exit {code})"),
                (false, None) => "failed".to_string(),
            })
        };
        let chosen = attempts.iter().find(|a| a.index == n);
        Outcome {
            task: rec.id.to_string(),
            prompt: rec.prompt.clone(),
            attempt: n,
            final_message: chosen.and_then(|a| a.final_message.clone()),
            check: chosen.and_then(check),
            attempts: attempts
                .iter()
                .map(|a| AttemptLine {
                    n: a.index,
                    status: a.status.to_string(),
                    rank: order
                        .iter()
                        .position(|i| *i == a.index)
                        .map(|p| p as u32 + 1),
                    best: best == Some(a.index),
                    check: check(a),
                    files: a.summary.map_or(0, |s| s.files_changed),
                    insertions: a.summary.map_or(0, |s| u64::from(s.lines_added)),
                    deletions: a.summary.map_or(0, |s| u64::from(s.lines_removed)),
                })
                .collect(),
            link: self
                .public_url
                .as_ref()
                .map(|u| format!("{}/ui/tasks/{}", u.trim_end_matches('/'), rec.id)),
            status: rec.status.to_string(),
            error: chosen.and_then(|a| a.error.clone()),
        }
    }

    /// Answers the forge for a task a webhook started, once, when it has ended: a review
    /// for a review, else a pull request of its change (if it made one) and, for a
    /// mention, a comment saying how it went.
    pub async fn answer_forge(&self, id: &TaskId) -> Result<()> {
        let answered = self.answer_forge_once(id).await;
        if let Err(e) = &answered {
            self.db.trigger_failed(id, &e.to_string()).await?;
        }
        answered
    }

    /// What a task a webhook started owes the forge, and how answering it went.
    pub async fn forge_trigger(&self, task: &Task) -> Result<Option<TriggerRecord>> {
        Ok(self.db.trigger(self.mine(task)?).await?)
    }

    async fn answer_forge_once(&self, id: &TaskId) -> Result<()> {
        let Some(trigger) = self.db.trigger(id).await? else {
            return Ok(());
        };
        let task = self.task(id.as_str()).await?;
        let env = self.task_env(&task).await?;
        let Some(forge) = env.forge.clone() else {
            return Ok(());
        };
        // At most once: the mark comes before anything is posted.
        if !self.db.answer_trigger(id, now_ms()).await? {
            return Ok(());
        }
        let repo = RepoName::parse(&trigger.repository)?;
        let token = self
            .forge_secret(&task.record().environment, &forge.token)
            .await?;
        let client = self.github(&forge, token)?;
        let attempts = self.attempts(&task).await?;
        let chosen = best::default_attempt(&attempts).unwrap_or(1);
        let outcome = self.outcome(&task, &attempts, chosen);
        if trigger.kind == TriggerKind::Review.as_str() {
            if let Some(number) = trigger.number {
                client
                    .review(&repo, number, &text::review(&outcome))
                    .await?;
            }
            return Ok(());
        }
        let changed = best::best(&attempts)
            .and_then(|b| attempts.iter().find(|a| a.index == b))
            .is_some_and(|a| a.summary.is_some_and(|s| s.files_changed > 0));
        let pulled = if changed {
            let opts = PullOptions {
                attempt: None,
                branch: None,
                base: Some(trigger.base.clone()),
                draft: false,
            };
            Some(self.open_pull(&task, &opts).await)
        } else {
            None
        };
        let (pull, failure) = match pulled {
            Some(Ok(p)) => (
                p.record
                    .number
                    .zip(p.record.url.clone())
                    .map(|(number, url)| PullRequest {
                        number,
                        url,
                        head: p.record.branch.clone(),
                        base: p.record.base.clone(),
                    }),
                None,
            ),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        if let Some(number) = trigger.number {
            let mut body = text::answer(&outcome, pull.as_ref());
            if let Some(e) = &failure {
                body.push_str(&format!("\n\nThe pull request could not be opened: {e}.\n"));
            }
            client.comment(&repo, number, &body).await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every environment of every workspace that listens for webhooks, with the view
    /// its tasks run in (a token workspace's owner is a tenant).
    async fn listening(&self) -> Result<Vec<Listening>> {
        let mut out = Vec::new();
        for rec in self.db.all_envs().await? {
            let Ok(env) = Environment::parse(&format!("environment `{}`", rec.name), &rec.source)
            else {
                continue;
            };
            let Some(forge) = env.forge.clone().filter(|f| f.webhook_secret.is_some()) else {
                continue;
            };
            let Ok(ws) = rec.workspace.parse::<Workspace>() else {
                continue;
            };
            let view = if ws == Workspace::default_workspace() {
                self.in_workspace(&ws)
            } else {
                self.for_tenant(&ws)
            };
            out.push(Listening { view, env, forge });
        }
        Ok(out)
    }
}

/// What `hangar forge connect github` asks for.
pub struct ForgeConnect {
    /// The secret that will hold the token (set with `hangar secret set`).
    pub token_secret: String,
    /// The secret the webhook secret's value goes into.
    pub webhook_secret_name: String,
    pub webhook_secret: Secret,
    /// `owner/name`; `None`: read from the repository URL (or kept from before).
    pub repository: Option<String>,
    /// The API's base URL; `None`: github.com's (or kept from before).
    pub api: Option<String>,
}

/// What a task started from the forge owes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TriggerKind {
    Mention,
    Review,
    Autofix,
}

impl TriggerKind {
    fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Mention => "mention",
            TriggerKind::Review => "review",
            TriggerKind::Autofix => "autofix",
        }
    }
}

/// A task to start for a delivery, with what it owes the forge.
struct Work {
    request: TaskRequest,
    kind: TriggerKind,
    number: Option<u64>,
    base: String,
}

impl Runner {
    /// Hears a webhook delivery: its signature checked against each listening
    /// environment's secret before anything of the body is read, its id noted (a replay
    /// does nothing), then the event read. What it asks for runs after this returns, so
    /// the forge gets its answer at once.
    pub async fn hear(self: &Arc<Self>, delivery: Delivery) -> Result<Heard> {
        let engine = self.engine();
        let mut signed = Vec::new();
        for l in engine.listening().await? {
            let name = l.forge.webhook_secret.clone().unwrap_or_default();
            let Ok(secret) = l.view.forge_secret(&l.env.name.to_string(), &name).await else {
                continue;
            };
            if webhook::verify(
                secret.expose(),
                &delivery.body,
                delivery.signature.as_deref(),
            )
            .is_ok()
            {
                signed.push(l);
            }
        }
        if signed.is_empty() {
            return Err(match delivery.signature {
                None => webhook::WebhookError::Unsigned.into(),
                Some(_) => webhook::WebhookError::BadSignature.into(),
            });
        }
        if !engine
            .db
            .record_delivery(&delivery.id, &delivery.event, now_ms())
            .await?
        {
            return Ok(Heard::Duplicate);
        }
        let hook = webhook::parse(&delivery.event, &delivery.body)?;
        let repo = match &hook {
            Hook::Comment(c) => c.repo.clone(),
            Hook::WorkflowFailed(w) => w.repo.clone(),
            Hook::Ignored { event, action } => {
                return Ok(Heard::Ignored(match action {
                    Some(a) => format!("`{event}` `{a}` is not acted on"),
                    None => format!("`{event}` is not acted on"),
                }))
            }
        };
        let serves =
            |l: &Listening| RepoName::parse(&l.forge.repository).is_ok_and(|r| r.same(&repo));
        // Listening environments come in (workspace, name) order, so when two serve the
        // same repository with the same secret, the same one always answers.
        let serving = signed.iter().filter(|l| serves(l)).count();
        if serving > 1 {
            tracing::warn!(
                "webhook delivery {}: {serving} environments serve {repo} with this secret; \
                 the first by workspace and name takes it",
                delivery.id
            );
        }
        let Some(l) = signed.into_iter().find(|l| serves(l)) else {
            tracing::info!(
                "webhook delivery {}: no environment serves {repo}",
                delivery.id
            );
            return Ok(Heard::NotServed(repo.to_string()));
        };
        match hook {
            Hook::Comment(c) => {
                let Some(asked) = mention::find(&l.forge.mention, &c.body) else {
                    return Ok(Heard::Ignored(format!(
                        "the comment does not call {}",
                        l.forge.mention
                    )));
                };
                if !l
                    .forge
                    .trusted
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&c.association))
                {
                    let runner = Arc::clone(self);
                    let sender = c.sender.clone();
                    self.spawn_forge_work("answer a sender who may not call hangar", async move {
                        runner.refuse(&l, &c.repo, c.number, &sender).await
                    });
                    return Ok(Heard::Accepted(format!(
                        "{} ({}) may not call hangar: answered politely",
                        c.sender, c.association
                    )));
                }
                let runner = Arc::clone(self);
                let what = match &asked {
                    Mention::Review(_) => "a review",
                    Mention::Task(_) => "a task",
                };
                let number = c.number;
                self.spawn_forge_work("start a task from a comment", async move {
                    runner.start_from_comment(l, c, asked).await
                });
                Ok(Heard::Accepted(format!("{what} for #{number} starts")))
            }
            Hook::WorkflowFailed(w) => {
                if !l.forge.autofix.contains(&w.workflow) {
                    return Ok(Heard::Ignored(format!(
                        "workflow `{}` is not one [forge] autofix names",
                        w.workflow
                    )));
                }
                let runner = Arc::clone(self);
                let branch = w.head_branch.clone();
                self.spawn_forge_work("start an autofix", async move {
                    runner.start_autofix(l, w).await
                });
                Ok(Heard::Accepted(format!("an autofix of `{branch}` starts")))
            }
            Hook::Ignored { .. } => unreachable!("returned above"),
        }
    }

    /// Answers a sender who may not call hangar.
    async fn refuse(
        &self,
        l: &Listening,
        repo: &RepoName,
        number: u64,
        sender: &str,
    ) -> Result<()> {
        let client = l.client().await?;
        client
            .comment(repo, number, &text::not_allowed(sender))
            .await?;
        Ok(())
    }

    async fn start_from_comment(
        self: Arc<Self>,
        l: Listening,
        c: webhook::Comment,
        asked: Mention,
    ) -> Result<()> {
        let client = l.client().await?;
        let on_pull = c.place != CommentPlace::Issue;
        // The pull request's head branch, which must be in this repository: a fork's
        // branch is not in the mirror, and hangar pushes nowhere else.
        let head = if on_pull {
            let info = client.pull(&c.repo, c.number).await?;
            if !info.head_repo.as_ref().is_some_and(|r| r.same(&c.repo)) {
                client
                    .comment(
                        &c.repo,
                        c.number,
                        "hangar works only on branches of this repository; this pull request's \
                         head is in a fork.",
                    )
                    .await?;
                return Ok(());
            }
            Some(info.head)
        } else {
            None
        };
        // Either way the answer goes to the head branch, or for an issue the default one.
        let base = head.clone().unwrap_or_else(|| l.env.default_branch.clone());
        let (prompt, approval, kind) = match asked {
            Mention::Review(focus) => {
                let guidelines = self.review_guidelines(&l, &base).await;
                let prompt = review_prompt(&c, &base, focus.as_deref(), guidelines.as_deref());
                (prompt, Some(Approval::ReadOnly), TriggerKind::Review)
            }
            Mention::Task(asked) => (mention_prompt(&asked, &c), None, TriggerKind::Mention),
        };
        let work = Work {
            request: TaskRequest {
                environment: l.env.name.to_string(),
                prompt,
                branch: head,
                approval,
                attempts: 1,
                ..TaskRequest::default()
            },
            kind,
            number: Some(c.number),
            base,
        };
        let repo = c.repo.clone();
        if let Err(e) = self.start_work(&l, &repo, work).await {
            client
                .comment(
                    &repo,
                    c.number,
                    &format!("hangar could not start the task: {e}."),
                )
                .await?;
            return Err(e);
        }
        Ok(())
    }

    async fn start_autofix(
        self: Arc<Self>,
        l: Listening,
        w: webhook::WorkflowFailure,
    ) -> Result<()> {
        let client = l.client().await?;
        let jobs = client
            .failed_jobs(&w.repo, w.run_id, LOG_TAIL_LINES)
            .await?;
        let prompt = autofix_prompt(&w, &jobs);
        let work = Work {
            request: TaskRequest {
                environment: l.env.name.to_string(),
                prompt,
                branch: Some(w.head_branch.clone()),
                attempts: 1,
                ..TaskRequest::default()
            },
            kind: TriggerKind::Autofix,
            number: None,
            base: w.head_branch.clone(),
        };
        self.start_work(&l, &w.repo, work).await
    }

    async fn start_work(
        self: &Arc<Self>,
        l: &Listening,
        repo: &RepoName,
        work: Work,
    ) -> Result<()> {
        let task = self
            .accept_owing(l.view.again(), &work.request, |id| TriggerRecord {
                task: id.clone(),
                kind: work.kind.as_str().to_string(),
                repository: repo.to_string(),
                number: work.number,
                base: work.base.clone(),
                answered_ms: None,
                error: None,
            })
            .await?;
        tracing::info!(
            "webhook: task {} ({}) for {repo} in environment `{}`",
            task.id(),
            work.kind.as_str(),
            l.env.name
        );
        Ok(())
    }

    /// The "Review guidelines" of the repository's AGENTS.md at `branch`, if any.
    async fn review_guidelines(&self, l: &Listening, branch: &str) -> Option<String> {
        let mirrors = self.engine().mirrors.clone();
        let reach = l.view.check_repo(&l.env.repo).await.ok()?;
        let (repo, branch) = (l.env.repo.clone(), branch.to_string());
        let file = tokio::task::spawn_blocking(move || {
            mirrors.sync(&repo, &reach).ok()?;
            mirrors.file_at(&repo, &branch, "AGENTS.md").ok()?.1
        })
        .await
        .ok()??;
        mention::review_guidelines(&String::from_utf8_lossy(&file))
    }
}

/// A mention's task: what was asked, then where (a pull request's title, or the issue's
/// title and body).
fn mention_prompt(asked: &str, c: &webhook::Comment) -> String {
    match c.place {
        CommentPlace::Issue => format!(
            "{asked}\n\nIssue #{}: {}\n\n{}\n",
            c.number,
            c.title,
            c.issue_body.trim_end()
        ),
        CommentPlace::PullConversation | CommentPlace::PullReview => {
            format!("{asked}\n\n(On pull request #{}: {})\n", c.number, c.title)
        }
    }
}

/// A review's task: read the change, write the review as the final message, change
/// nothing; with the focus asked for and the repository's guidelines.
fn review_prompt(
    c: &webhook::Comment,
    branch: &str,
    focus: Option<&str>,
    guidelines: Option<&str>,
) -> String {
    let mut prompt = format!(
        "Review the changes of pull request #{} (\"{}\") on branch `{branch}`: read the code \
         they change, find bugs, regressions and risks, and write your review as your final \
         message. Change no files.\n",
        c.number, c.title
    );
    if let Some(f) = focus {
        prompt.push_str(&format!("\nFocus: {f}\n"));
    }
    if let Some(g) = guidelines {
        prompt.push_str(&format!(
            "\nThe repository's review guidelines (AGENTS.md):\n\n{}\n",
            g.trim_end()
        ));
    }
    prompt
}

/// An autofix's task: the failed workflow, and each failed job with its log's end.
fn autofix_prompt(w: &webhook::WorkflowFailure, jobs: &[hangar_forge::FailedJob]) -> String {
    let mut prompt = format!(
        "The workflow `{}` failed on branch `{}` (commit {}). Find the cause and fix it, so \
         that the failing jobs pass.\n",
        w.workflow, w.head_branch, w.head_sha
    );
    for job in jobs {
        // A fence the log cannot close.
        let fence = "`".repeat(longest_run(&job.log_tail, '`').max(2) + 1);
        prompt.push_str(&format!(
            "\n## Failed job: {}\n\nThe end of its log:\n\n{fence}\n{}\n{fence}\n",
            job.name,
            job.log_tail.trim_end()
        ));
    }
    prompt
}

/// The longest run of `c` in `s`.
fn longest_run(s: &str, c: char) -> usize {
    s.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

/// The first 8 characters of a task id, for branch names.
fn short(id: &TaskId) -> &str {
    let s = id.as_str();
    &s[..s.len().min(8)]
}

/// `Name <email>` (checked by the environment file's parse) as git's identity.
fn identity(author: &str) -> Result<Identity> {
    let (name, rest) = author.split_once('<').unwrap_or((author, ""));
    Identity::new(name.trim(), rest.trim_end_matches('>'))
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_forge::FailedJob;

    fn comment(place: CommentPlace) -> webhook::Comment {
        webhook::Comment {
            repo: RepoName::parse("o/r").unwrap(),
            number: 7,
            place,
            body: "@hangar fix it".into(),
            association: "OWNER".into(),
            sender: "octocat".into(),
            title: "It breaks".into(),
            issue_body: "Steps:\n1. run it\n\n".into(),
            head: None,
        }
    }

    fn check(got: String, expected: &str) {
        assert_eq!(got, expected);
    }

    #[test]
    fn prompts_say_what_was_asked_and_where() {
        check(
            mention_prompt("fix it", &comment(CommentPlace::Issue)),
            "fix it\n\nIssue #7: It breaks\n\nSteps:\n1. run it\n",
        );
        check(
            mention_prompt("fix it", &comment(CommentPlace::PullReview)),
            "fix it\n\n(On pull request #7: It breaks)\n",
        );
        check(
            review_prompt(
                &comment(CommentPlace::PullConversation),
                "topic",
                Some("for security regressions"),
                Some("Look for unchecked errors.\n"),
            ),
            "Review the changes of pull request #7 (\"It breaks\") on branch `topic`: read the \
             code they change, find bugs, regressions and risks, and write your review as your \
             final message. Change no files.\n\nFocus: for security regressions\n\n\
             The repository's review guidelines (AGENTS.md):\n\nLook for unchecked errors.\n",
        );
        let run = webhook::WorkflowFailure {
            repo: RepoName::parse("o/r").unwrap(),
            run_id: 1,
            workflow: "CI".into(),
            head_branch: "main".into(),
            head_sha: "abc".into(),
        };
        // A log that holds a fence of its own stays inside the prompt's.
        check(
            autofix_prompt(
                &run,
                &[FailedJob {
                    name: "test".into(),
                    log_tail: "````\nFAILED x\n".into(),
                }],
            ),
            "The workflow `CI` failed on branch `main` (commit abc). Find the cause and fix it, \
             so that the failing jobs pass.\n\n## Failed job: test\n\nThe end of its log:\n\n\
             `````\n````\nFAILED x\n`````\n",
        );
    }

    #[test]
    fn an_author_becomes_gits_identity() {
        let id = identity("hangar bot <bot@hangar.test>").unwrap();
        assert_eq!(
            (id.name.as_str(), id.email.as_str()),
            ("hangar bot", "bot@hangar.test")
        );
    }
}
