//! The agent phase through a harness: the CLI's layer (installed once per image and
//! harness, cached apart from environments, so switching harness rebuilds nothing), the
//! run's files and script, the approval mode (read-only is a mount, not a request to the
//! CLI), and the CLI's verdict and events.

use std::path::PathBuf;

use hangar_harness::{harness, Install, Needs, Outputs, RunSpec, Verdict};
use hangar_sandbox::{ExecSpec, Sandbox};
use hangar_spec::{Approval, AttemptStatus, Harness as Kind, Phase};
use hangar_store::db::{now_ms, EventRow};
use sha2::{Digest as _, Sha256};

use crate::attempt::{Ctx, Prepared, Stop};
use crate::error::{io_err, EngineError};
use crate::layers::HarnessLayer;
use crate::phase::{run_step, Step};
use crate::Engine;

/// Where the workspaces live in every sandbox; read-only mode covers all of it, so the
/// agent cannot move the repository's directory aside and put a writable copy there.
const WORKSPACES: &str = "/workspace";
/// An install that takes longer is stopped.
const INSTALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// How the agent's run ended, when it succeeded.
pub(crate) struct AgentDone {
    pub final_message: Option<String>,
    pub exit_code: Option<i32>,
}

impl Engine {
    /// The layer holding the harness's CLI for this image, built on first use; `None`
    /// for a harness that installs nothing.
    pub(crate) async fn harness_layer(
        &self,
        ctx: &mut Ctx<'_>,
        p: &Prepared,
    ) -> Result<Option<PathBuf>, Stop> {
        let kind = ctx.plan.env.agent.harness;
        let Some(install) = harness(kind).install() else {
            return Ok(None);
        };
        let mut h = Sha256::new();
        for (digest, _) in &p.layers {
            h.update(digest.to_string().as_bytes());
            h.update(b"\n");
        }
        h.update(install.id.as_bytes());
        h.update(install.script.as_bytes());
        let key = hex::encode(h.finalize());
        let short = &key[..12];
        let build = match self.layers.harness(&key, self.now()).await? {
            HarnessLayer::Ready(dir) => {
                ctx.logger.note(
                    Phase::Prepare,
                    &format!("harness: {kind} from layer {short} ({})", install.id),
                );
                return Ok(Some(dir));
            }
            HarnessLayer::Missing(build) => build,
        };
        crate::attempt::timed(
            &self.db,
            ctx.plan,
            Phase::Install,
            self.install_harness(ctx, p, kind, &install, &build.dir),
        )
        .await?;
        let dir = self.layers.commit_harness(build, &install.id, self.now())?;
        ctx.logger.note(
            Phase::Install,
            &format!(
                "harness: {kind} installed as layer {short} ({})",
                install.id
            ),
        );
        Ok(Some(dir))
    }

    async fn install_harness(
        &self,
        ctx: &mut Ctx<'_>,
        p: &Prepared,
        kind: Kind,
        install: &Install,
        dir: &std::path::Path,
    ) -> Result<(), Stop> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io_err("remove", dir))?;
        }
        let registry = registry(install.needs).map_err(Stop::error)?;
        let lowers = p.layers.iter().map(|(_, d)| d.clone()).collect();
        let sandbox = crate::attempt::sandbox(ctx, lowers, p).await?;
        if let Some(net) = &ctx.net {
            net.enter_install();
        }
        let mut env = ctx.base_env.clone();
        hangar_image::set_var(&mut env, registry.0, &registry.1);
        let step = Step {
            phase: Phase::Install,
            name: "install",
            script: &install.script,
            cwd: "/",
            env,
            timeout: Some(INSTALL_TIMEOUT),
            runs_as: crate::phase::RunsAs::Root,
        };
        let ran = run_step(&sandbox, &ctx.logger, step, &mut ctx.cancel).await;
        ctx.net = None;
        let outcome = match ran {
            Ok(res) if res.cancelled => Err(crate::attempt::cancelled()),
            Ok(res) if !res.success() => Err(Stop::error(format!(
                "failed to install the {kind} harness: {}",
                res.last_words()
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(Stop::from(e)),
        };
        if let Err(stop) = outcome {
            let _ = sandbox.destroy().await;
            return Err(stop);
        }
        self.strip_hangar_files(&sandbox).await?;
        sandbox
            .destroy_keeping_upper(dir.to_path_buf())
            .await
            .map_err(|e| Stop::error(format!("failed to keep the {kind} layer: {e}")))?;
        let synced = dir.to_path_buf();
        let sync_err = |e: String| Stop::error(format!("failed to sync the {kind} layer: {e}"));
        tokio::task::spawn_blocking(move || hangar_sandbox::make_durable(&synced))
            .await
            .map_err(|e| sync_err(e.to_string()))?
            .map_err(|e| sync_err(e.to_string()))?;
        Ok(())
    }
}

/// Runs the agent through its harness, under the approval mode; its verdict decides
/// the attempt, its events are stored.
pub(crate) async fn run(ctx: &mut Ctx<'_>, sandbox: &Sandbox) -> Result<AgentDone, Stop> {
    let plan = ctx.plan;
    let agent = &plan.env.agent;
    let h = harness(agent.harness);
    let workdir = ctx.workdir.clone();
    let run = RunSpec {
        model: agent.model.as_deref(),
        endpoint: agent.endpoint.as_deref(),
        workdir: &workdir,
        script: Some(plan.agent_script),
    };
    let inv = h
        .invocation(&run)
        .map_err(|e| Stop::error(format!("failed to start the agent: {e}")))?;
    // The run's directory (the CLI's output files) and the config files' directories,
    // made here rather than by a `mkdir` in the script; `own` below gives them to
    // `[agent] user`.
    sandbox.create_dir_all(hangar_harness::RUN_DIR)?;
    for (path, content) in &inv.files {
        if let Some(dir) = std::path::Path::new(path).parent() {
            sandbox.create_dir_all(&dir.display().to_string())?;
        }
        sandbox.write_file(path, content.as_bytes(), 0o600)?;
    }
    let (profile, text) = hangar_harness::LOGIN_PROFILE;
    sandbox.create_dir_all("/etc/profile.d")?;
    sandbox.write_file(profile, text.as_bytes(), 0o644)?;
    // `[agent] user` gets what root's steps left it, the CLI's files included.
    crate::attempt::own(ctx, sandbox, Phase::Agent).await?;
    if agent.harness != Kind::Script {
        ctx.logger.note(
            Phase::Agent,
            &format!(
                "agent: {} (model {}, approval {})",
                agent.harness,
                agent.model.as_deref().unwrap_or("default"),
                agent.approval
            ),
        );
    }
    let read_only =
        match agent.approval {
            Approval::ReadOnly => Some(sandbox.read_only(WORKSPACES).map_err(|e| {
                Stop::error(format!("failed to make the workspace read-only: {e}"))
            })?),
            _ => None,
        };
    // A script agent may call the model itself: it gets where and which.
    let prompt = [
        ("HANGAR_PROMPT", plan.prompt),
        (
            "HANGAR_MODEL_ENDPOINT",
            agent.endpoint.as_deref().unwrap_or(""),
        ),
        ("HANGAR_MODEL", agent.model.as_deref().unwrap_or("")),
    ];
    let ran = if agent.harness == Kind::Script {
        ctx.user(
            sandbox,
            Phase::Agent,
            "agent script",
            &inv.script,
            &prompt,
            Some(agent.timeout),
        )
        .await
    } else {
        let step = Step {
            phase: Phase::Agent,
            name: "agent",
            script: &inv.script,
            cwd: &workdir,
            env: Vec::new(),
            timeout: Some(agent.timeout),
            runs_as: ctx.agent_runs_as(),
        };
        ctx.run(sandbox, step, &prompt).await
    };
    if let Some(ro) = read_only {
        // Nothing the agent left may write once the mount is gone.
        sandbox
            .output(ExecSpec::new([
                "sh",
                "-c",
                "kill -KILL -1 2>/dev/null; true",
            ]))
            .await?;
        ro.undo()?;
    }
    let res = ran?;
    if res.timed_out {
        let label = format!("{} agent", agent.harness);
        return Err(Stop::timed_out(&label, agent.timeout, &res));
    }
    let mut out = Outputs {
        exit_code: res.status.code,
        tail: res.tail.clone(),
        last_stdout: res.last_stdout.clone(),
        ..Outputs::default()
    };
    for name in &inv.outputs {
        if let Ok(data) = sandbox.read_file(&format!("{}/{name}", hangar_harness::RUN_DIR)) {
            out.files.insert(name.to_string(), data);
        }
    }
    let judged = h.judge(&out);
    store_events(ctx, &judged.events).await?;
    match judged.verdict {
        Verdict::Done { final_message } => Ok(AgentDone {
            final_message,
            exit_code: res.status.code,
        }),
        Verdict::Failed { message } => Err(Stop {
            status: AttemptStatus::Error,
            error: format!("the {} agent failed: {message}", agent.harness),
            exit_code: res.status.code,
            phase: None,
        }),
    }
}

async fn store_events(ctx: &Ctx<'_>, events: &[hangar_harness::AgentEvent]) -> Result<(), Stop> {
    let redact = |s: &str| ctx.secrets.redactor.redact(s).into_owned();
    let ts_ms = now_ms();
    let rows: Vec<EventRow> = events
        .iter()
        .zip(1..)
        .map(|(e, seq)| EventRow {
            attempt: ctx.plan.index,
            seq,
            ts_ms,
            kind: e.kind.as_str().to_string(),
            text: redact(&e.text),
            exit_code: e.exit_code,
            detail: e.detail.as_deref().map(redact),
        })
        .collect();
    ctx.deps
        .db
        .append_events(ctx.plan.task, &rows)
        .await
        .map_err(EngineError::from)?;
    Ok(())
}

/// The variable and URL of the registry an install needs, as this host's package
/// managers are configured (an explicit `HANGAR_NPM_REGISTRY` or `HANGAR_PIP_INDEX_URL`
/// wins).
pub(crate) fn registry(needs: Needs) -> Result<(&'static str, String), String> {
    let (var, probes): (&str, &[&[&str]]) = match needs {
        Needs::Npm => (
            "HANGAR_NPM_REGISTRY",
            &[&["npm", "config", "get", "registry"]],
        ),
        Needs::Pip => (
            "HANGAR_PIP_INDEX_URL",
            &[
                &["pip3", "config", "get", "global.index-url"],
                &[
                    "python3",
                    "-c",
                    "from pip._internal.models.index import PyPI; print(PyPI.simple_url)",
                ],
            ],
        ),
    };
    let from_env = |v: &str| std::env::var(v).ok().filter(|s| !s.trim().is_empty());
    if let Some(url) = from_env(var).or_else(|| match needs {
        Needs::Pip => from_env("PIP_INDEX_URL"),
        Needs::Npm => from_env("NPM_CONFIG_REGISTRY"),
    }) {
        return Ok((var, url));
    }
    for argv in probes {
        let Ok(out) = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()
        else {
            continue;
        };
        let url = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .rfind(|l| l.starts_with("http://") || l.starts_with("https://"))
            .map(str::to_string);
        if let (true, Some(url)) = (out.status.success(), url) {
            return Ok((var, url));
        }
    }
    Err(format!(
        "failed to find the {} registry to install from: configure {} on this host or set {var}",
        match needs {
            Needs::Npm => "npm",
            Needs::Pip => "Python package",
        },
        match needs {
            Needs::Npm => "npm",
            Needs::Pip => "pip",
        },
    ))
}
