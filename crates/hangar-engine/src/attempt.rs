//! One attempt, start to end: sandbox from the image, clone the default branch from the
//! host mirror, setup (auto-install, setup script), check out the task's branch or commit,
//! maintenance, the agent, collect the diff, teardown. Each phase is timed and logged;
//! whatever fails becomes the attempt's error sentence.

use std::path::PathBuf;
use std::time::Duration;

use hangar_image::ImageDefaults;
use hangar_sandbox::{BindMount, Resources, Sandbox, SandboxSpec};
use hangar_spec::{AttemptStatus, Environment, Phase, TaskId};
use hangar_store::db::{now_ms, AttemptOutcome, PhaseTiming};
use tokio::sync::watch;

use crate::autoinstall;
use crate::diff;
use crate::error::{EngineError, Result};
use crate::phase::{run_step, script_line, Logger, Step, StepResult, MIRROR_DIR, RUN_DIR};
use crate::{Engine, Event, Progress};

/// What the attempt needs from its task.
pub(crate) struct AttemptPlan<'a> {
    pub task: &'a TaskId,
    pub index: u32,
    pub env: &'a Environment,
    pub prompt: &'a str,
    pub branch: Option<&'a str>,
    pub commit: Option<&'a str>,
    /// The agent script: the task's `--script`, else the environment's.
    pub agent_script: &'a str,
    pub progress: Progress,
}

/// A phase that ended the attempt early.
struct Stop {
    status: AttemptStatus,
    error: String,
    exit_code: Option<i32>,
    /// The phase it happened in (set by [`timed`]).
    phase: Option<Phase>,
}

impl Stop {
    fn error(error: impl Into<String>) -> Stop {
        Stop {
            status: AttemptStatus::Error,
            error: error.into(),
            exit_code: None,
            phase: None,
        }
    }
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Stop {
        Stop::error(e.to_string())
    }
}

impl From<hangar_sandbox::SandboxError> for Stop {
    fn from(e: hangar_sandbox::SandboxError) -> Stop {
        Stop::error(e.to_string())
    }
}

/// One of hangar's own scripts: a failure is `what` plus the script's last line.
struct Own<'a> {
    phase: Phase,
    name: &'a str,
    script: &'a str,
    cwd: &'a str,
    env: &'a [(&'a str, &'a str)],
    what: &'a str,
}

/// The attempt's sandbox and what every exec in it shares.
struct Ctx<'a> {
    plan: &'a AttemptPlan<'a>,
    logger: Logger,
    workdir: String,
    base_env: Vec<(String, String)>,
    cancel: watch::Receiver<bool>,
}

impl Ctx<'_> {
    fn env_for(&self, phase: Phase) -> Vec<(String, String)> {
        let mut env = self.base_env.clone();
        hangar_image::set_var(&mut env, "HANGAR_PHASE", phase.as_str());
        env
    }

    /// Runs hangar's own script (clone, checkout, collect); a failure is `what` plus
    /// the last line the script printed.
    async fn internal(&mut self, sandbox: &Sandbox, own: Own<'_>) -> Result<StepResult, Stop> {
        let Own {
            phase,
            name,
            script,
            cwd,
            env: extra,
            what,
        } = own;
        let mut env = self.env_for(phase);
        for (k, v) in extra {
            hangar_image::set_var(&mut env, k, v);
        }
        let res = run_step(
            sandbox,
            &self.logger,
            Step {
                phase,
                name,
                script,
                cwd,
                env,
                timeout: None,
            },
            &mut self.cancel,
        )
        .await?;
        if res.cancelled {
            return Err(cancelled());
        }
        if !res.success() {
            let last = res.tail.last().cloned().unwrap_or_default();
            return Err(Stop::error(format!(
                "failed to {what}: {}",
                if last.is_empty() {
                    format!("exit code {}", res.status.code_or_signal())
                } else {
                    last
                }
            )));
        }
        Ok(res)
    }

    /// Runs a user script (setup, maintenance, agent): a failure names its line.
    async fn user(
        &mut self,
        sandbox: &Sandbox,
        phase: Phase,
        label: &str,
        script: &str,
        extra: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<StepResult, Stop> {
        let mut env = self.env_for(phase);
        for (k, v) in extra {
            hangar_image::set_var(&mut env, k, v);
        }
        let res = run_step(
            sandbox,
            &self.logger,
            Step {
                phase,
                name: phase.as_str(),
                script,
                cwd: &self.workdir.clone(),
                env,
                timeout,
            },
            &mut self.cancel,
        )
        .await?;
        if res.cancelled {
            return Err(cancelled());
        }
        if res.timed_out {
            return Err(Stop {
                status: AttemptStatus::Error,
                error: format!(
                    "the {label} did not finish within {} and was stopped",
                    hangar_spec::format_duration(timeout.unwrap_or_default())
                ),
                exit_code: res.status.code.or(res.status.signal.map(|s| 128 + s)),
                phase: None,
            });
        }
        if !res.status.success() {
            let code = res.status.code_or_signal();
            let at = res
                .failed_line
                .map(|n| match script_line(script, n) {
                    Some(text) => format!(" at line {n} (`{text}`)"),
                    None => format!(" at line {n}"),
                })
                .unwrap_or_default();
            let how = if res.status.oom_killed {
                "was killed for running out of memory".to_string()
            } else {
                format!("with exit code {code}")
            };
            return Err(Stop {
                status: AttemptStatus::Error,
                error: format!("the {label} failed{at} {how}"),
                exit_code: Some(code),
                phase: None,
            });
        }
        Ok(res)
    }
}

/// Runs one phase, recording its timing and telling the progress callback.
async fn timed<T>(
    engine: &Engine,
    plan: &AttemptPlan<'_>,
    phase: Phase,
    f: impl std::future::Future<Output = Result<T, Stop>>,
) -> Result<T, Stop> {
    let started_ms = now_ms();
    (plan.progress)(&Event::PhaseStarted {
        attempt: plan.index,
        phase,
    });
    let out = f.await.map_err(|mut stop| {
        stop.phase.get_or_insert(phase);
        stop
    });
    let ended_ms = now_ms();
    let timing = PhaseTiming {
        phase,
        started_ms,
        ended_ms,
    };
    if let Err(e) = engine.db.add_phase(plan.task, plan.index, timing).await {
        tracing::warn!("{e}");
    }
    (plan.progress)(&Event::PhaseFinished {
        attempt: plan.index,
        phase,
        ms: ended_ms - started_ms,
        ok: out.is_ok(),
    });
    out
}

fn cancelled() -> Stop {
    Stop {
        status: AttemptStatus::Cancelled,
        error: "cancelled".into(),
        exit_code: None,
        phase: None,
    }
}

const CLONE: &str = r#"mkdir -p "$(dirname "$HANGAR_WORKDIR")"
git clone --quiet --no-hardlinks --branch "$HANGAR_DEFAULT_BRANCH" "$HANGAR_MIRROR" "$HANGAR_WORKDIR" 2>&1
"#;

const LIST_TOP: &str = r#"ls -A1 > "$HANGAR_RUN/top"
"#;

const CHECKOUT: &str = r#"if [ -n "$HANGAR_BRANCH" ]; then
  if ! git rev-parse --verify --quiet "refs/remotes/origin/$HANGAR_BRANCH^{commit}" >/dev/null; then
    echo "branch $HANGAR_BRANCH is not in the repository" >&2; exit 1
  fi
  git checkout --quiet -B "$HANGAR_BRANCH" "origin/$HANGAR_BRANCH"
elif [ -n "$HANGAR_COMMIT" ]; then
  if ! git rev-parse --verify --quiet "$HANGAR_COMMIT^{commit}" >/dev/null; then
    echo "commit $HANGAR_COMMIT is not in the repository" >&2; exit 1
  fi
  git -c advice.detachedHead=false checkout --quiet --detach "$HANGAR_COMMIT"
fi
git rev-parse HEAD > "$HANGAR_RUN/base"
git log -1 --format='at %h %s'
"#;

/// The diff against the base, from a temporary index so the agent's own index (and any
/// commits it made) do not matter. The agent may have rewritten the repository's config:
/// external diff drivers, textconv, hooks and fsmonitor are switched off.
const COLLECT: &str = r#"kill -KILL -1 2>/dev/null || true
export GIT_INDEX_FILE="$HANGAR_RUN/collect.index" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
g() { git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.quotePath=true "$@"; }
rm -f "$GIT_INDEX_FILE"
g read-tree "$HANGAR_BASE"
g add -A .
g write-tree > "$HANGAR_RUN/tree"
g diff --cached --binary --full-index --no-ext-diff --no-textconv -M "$HANGAR_BASE" > "$HANGAR_RUN/diff.patch"
g diff --cached --numstat --no-ext-diff --no-textconv -M "$HANGAR_BASE" > "$HANGAR_RUN/numstat"
"#;

impl Engine {
    /// Runs one attempt and records how it ended. Never fails: every failure becomes
    /// the attempt's `error`.
    pub(crate) async fn run_attempt(
        &self,
        plan: &AttemptPlan<'_>,
        cancel: watch::Receiver<bool>,
    ) -> Result<()> {
        self.db.start_attempt(plan.task, plan.index).await?;
        let logger = Logger::new(
            self.db.clone(),
            plan.task.clone(),
            plan.index,
            plan.progress.clone(),
        );
        let mut ctx = Ctx {
            plan,
            logger,
            workdir: format!("/workspace/{}", hangar_spec::repo_name(&plan.env.repo)),
            base_env: Vec::new(),
            cancel,
        };
        let prepared = timed(self, plan, Phase::Prepare, self.prepare(plan)).await;
        let outcome = match prepared {
            Err(stop) => Err(stop),
            Ok((sandbox, defaults)) => {
                ctx.base_env = base_env(plan.env, defaults, &ctx.workdir);
                let out = self.phases(&mut ctx, &sandbox).await;
                if let Err(e) = sandbox.destroy().await {
                    ctx.logger.note(Phase::Collect, &format!("teardown: {e}"));
                }
                out
            }
        };
        let record = match outcome {
            Ok(done) => done,
            Err(stop) => {
                ctx.logger
                    .note(stop.phase.unwrap_or(Phase::Prepare), &stop.error);
                AttemptOutcome {
                    status: stop.status,
                    final_message: None,
                    exit_code: stop.exit_code,
                    error: Some(stop.error),
                    summary: None,
                    diff: None,
                    result_tree: None,
                }
            }
        };
        ctx.logger.finish().await;
        self.db
            .finish_attempt(plan.task, plan.index, &record)
            .await?;
        Ok(())
    }

    /// Image layers and the repository mirror, then the sandbox over them.
    async fn prepare(&self, plan: &AttemptPlan<'_>) -> Result<(Sandbox, ImageDefaults), Stop> {
        let rec = self.image_for(plan.env).await?;
        let (store, rec2) = (self.store.clone(), rec.clone());
        let layers = tokio::task::spawn_blocking(move || hangar_image::layers(&store, &rec2))
            .await
            .map_err(|e| Stop::error(format!("failed to unpack the image: {e}")))?
            .map_err(EngineError::from)?;
        let defaults = ImageDefaults::of(&self.store, &rec).map_err(EngineError::from)?;
        let (mirrors, repo) = (self.mirrors.clone(), plan.env.repo.clone());
        let mirror: PathBuf = tokio::task::spawn_blocking(move || mirrors.sync(&repo))
            .await
            .map_err(|e| Stop::error(format!("failed to mirror the repository: {e}")))??;

        let mut spec = SandboxSpec::new(layers.iter().map(|(_, p)| p.clone()).collect());
        let r = plan.env.resources;
        spec.resources = Resources {
            memory_bytes: r.memory,
            pids: r.pids,
            cpus: r.cpus,
        };
        spec.runtime = self.runtime;
        spec.mounts.push(BindMount {
            source: mirror,
            destination: MIRROR_DIR.into(),
            read_only: true,
        });
        self.db
            .set_sandbox(plan.task, plan.index, spec.id.as_str())
            .await
            .map_err(EngineError::from)?;
        let sandbox = Sandbox::create(&self.host, spec).await?;
        let diff_ids: Vec<_> = layers.iter().map(|(d, _)| d.clone()).collect();
        self.store
            .lease_layers(sandbox.dir(), &diff_ids)
            .map_err(EngineError::from)?;
        Ok((sandbox, defaults))
    }

    async fn phases(&self, ctx: &mut Ctx<'_>, sandbox: &Sandbox) -> Result<AttemptOutcome, Stop> {
        let plan = ctx.plan;
        let env = plan.env;
        let workdir = ctx.workdir.clone();
        // hangar's run directory; the agent may replace it, so every later access goes
        // through the sandbox's own root (see Sandbox::write_file).
        let mkdir = sandbox
            .output(hangar_sandbox::ExecSpec::new(["mkdir", "-p", RUN_DIR]))
            .await?;
        if !mkdir.status.success() {
            return Err(Stop::error(format!(
                "failed to create {RUN_DIR} in the sandbox: {}",
                String::from_utf8_lossy(&mkdir.stderr).trim()
            )));
        }

        timed(self, plan, Phase::Setup, async {
            ctx_clone(ctx, sandbox, &workdir).await?;
            if env.setup.auto_install {
                ctx.internal(
                    sandbox,
                    Own {
                        phase: Phase::Setup,
                        name: "list",
                        script: LIST_TOP,
                        cwd: &workdir,
                        env: &[("HANGAR_RUN", RUN_DIR)],
                        what: "list the workspace",
                    },
                )
                .await?;
                let top = sandbox.read_file(&format!("{RUN_DIR}/top"))?;
                let files: Vec<String> = String::from_utf8_lossy(&top)
                    .lines()
                    .map(str::to_string)
                    .collect();
                let steps = autoinstall::plan(&files);
                if steps.is_empty() {
                    ctx.logger
                        .note(Phase::Setup, "auto-install: no lockfiles found");
                } else {
                    ctx.internal(
                        sandbox,
                        Own {
                            phase: Phase::Setup,
                            name: "probe",
                            script: &autoinstall::probe_script(&steps),
                            cwd: &workdir,
                            env: &[],
                            what: "auto-install",
                        },
                    )
                    .await?;
                    let script = autoinstall::install_script(&steps);
                    ctx.user(sandbox, Phase::Setup, "auto-install", &script, &[], None)
                        .await?;
                }
            }
            if !env.setup.script.trim().is_empty() {
                ctx.user(
                    sandbox,
                    Phase::Setup,
                    "setup script",
                    &env.setup.script,
                    &[],
                    None,
                )
                .await?;
            }
            Ok(())
        })
        .await?;

        let base = timed(self, plan, Phase::Checkout, async {
            ctx.internal(
                sandbox,
                Own {
                    phase: Phase::Checkout,
                    name: "checkout",
                    script: CHECKOUT,
                    cwd: &workdir,
                    env: &[
                        ("HANGAR_BRANCH", plan.branch.unwrap_or("")),
                        ("HANGAR_COMMIT", plan.commit.unwrap_or("")),
                        ("HANGAR_RUN", RUN_DIR),
                    ],
                    what: "check out the task's branch or commit",
                },
            )
            .await?;
            let base = sandbox.read_file(&format!("{RUN_DIR}/base"))?;
            let base = String::from_utf8_lossy(&base).trim().to_string();
            if base.len() < 40 || !base.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Stop::error(format!(
                    "failed to read the base commit (git printed `{base}`)"
                )));
            }
            Ok(base)
        })
        .await?;
        self.db
            .set_base_commit(plan.task, plan.index, &base)
            .await
            .map_err(EngineError::from)?;

        if !env.maintenance.script.trim().is_empty() {
            timed(self, plan, Phase::Maintenance, async {
                ctx.user(
                    sandbox,
                    Phase::Maintenance,
                    "maintenance script",
                    &env.maintenance.script,
                    &[],
                    None,
                )
                .await
                .map(|_| ())
            })
            .await?;
        }

        let agent = timed(self, plan, Phase::Agent, async {
            let res = ctx
                .user(
                    sandbox,
                    Phase::Agent,
                    "agent script",
                    plan.agent_script,
                    &[("HANGAR_PROMPT", plan.prompt)],
                    Some(env.agent.timeout),
                )
                .await?;
            Ok(res)
        })
        .await;
        // The diff is collected whether or not the agent succeeded: a failed agent's
        // partial work is still worth reading.
        let collected = timed(self, plan, Phase::Collect, async {
            ctx.internal(
                sandbox,
                Own {
                    phase: Phase::Collect,
                    name: "collect",
                    script: COLLECT,
                    cwd: &workdir,
                    env: &[("HANGAR_BASE", base.as_str()), ("HANGAR_RUN", RUN_DIR)],
                    what: "collect the diff",
                },
            )
            .await?;
            let read = |name: &str| -> Result<Vec<u8>, Stop> {
                sandbox
                    .read_file(&format!("{RUN_DIR}/{name}"))
                    .map_err(Stop::from)
            };
            let patch = read("diff.patch")?;
            let numstat = String::from_utf8_lossy(&read("numstat")?).into_owned();
            let tree = String::from_utf8_lossy(&read("tree")?).trim().to_string();
            Ok((patch, diff::summary(&numstat), tree))
        })
        .await;
        let (patch, summary, tree) = collected?;
        let (status, final_message, exit_code, error) = match agent {
            Ok(res) => (AttemptStatus::Ready, res.last_stdout, res.status.code, None),
            Err(stop) => (stop.status, None, stop.exit_code, Some(stop.error)),
        };
        if let Some(e) = &error {
            ctx.logger.note(Phase::Agent, e);
        }
        Ok(AttemptOutcome {
            status,
            final_message,
            exit_code,
            error,
            summary: Some(summary),
            diff: Some(patch),
            result_tree: Some(tree),
        })
    }
}

async fn ctx_clone(ctx: &mut Ctx<'_>, sandbox: &Sandbox, workdir: &str) -> Result<(), Stop> {
    let branch = ctx.plan.env.default_branch.clone();
    ctx.internal(
        sandbox,
        Own {
            phase: Phase::Setup,
            name: "clone",
            script: CLONE,
            cwd: "/",
            env: &[
                ("HANGAR_WORKDIR", workdir),
                ("HANGAR_DEFAULT_BRANCH", &branch),
                ("HANGAR_MIRROR", MIRROR_DIR),
            ],
            what: &format!("clone the default branch `{branch}`"),
        },
    )
    .await
    .map(|_| ())
}

/// The environment every exec starts from: the image's, a UTF-8 locale, `[env]`, and
/// where the workspace is.
fn base_env(env: &Environment, defaults: ImageDefaults, workdir: &str) -> Vec<(String, String)> {
    let mut out = defaults.env;
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    if !out.iter().any(|(k, _)| k == "LANG") {
        out.push(("LANG".into(), "C.UTF-8".into()));
    }
    for (k, v) in &env.env {
        hangar_image::set_var(&mut out, k, v);
    }
    hangar_image::set_var(&mut out, "HANGAR_WORKSPACE", workdir);
    out
}
