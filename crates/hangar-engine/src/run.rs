//! One-off commands in a fresh sandbox made from an image (`hangar run`): the sandbox
//! with the image's defaults, the caller's limits and variables, and the command's
//! process, its streams left to the caller; torn down when the caller is done.

use hangar_sandbox::{ExecSpec, Process, Resources, Sandbox, SandboxSpec, Stdio};

pub use hangar_sandbox::RuntimeKind;

use crate::{Engine, EngineError, Result};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub image: String,
    pub argv: Vec<String>,
    /// `KEY=VALUE`, over the image's own.
    pub env: Vec<String>,
    /// Default: the image's working directory, else `/`.
    pub workdir: Option<String>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
    pub cpus: Option<f64>,
    /// Default: crun.
    pub runtime: Option<RuntimeKind>,
    /// Pass standard input through.
    pub stdin: bool,
}

/// A command that was started, or that could not be (the shell's 126 or 127).
pub enum Started {
    Running(Box<Running>),
    /// The sandbox came up but the program could not be executed; it is torn down.
    NotExecuted {
        code: i32,
        message: String,
    },
}

/// A running command and the sandbox it runs in.
pub struct Running {
    pub process: Process,
    sandbox: Sandbox,
}

impl Running {
    /// Tears the sandbox down (every process left in it ends).
    pub async fn finish(self) -> Result<()> {
        Ok(self.sandbox.destroy().await?)
    }
}

impl Engine {
    /// Makes the sandbox and starts the command in it.
    pub async fn start_run(&self, spec: &RunSpec) -> Result<Started> {
        if spec.argv.is_empty() {
            return Err(EngineError::NoCommand);
        }
        let rec = self.store.image(&spec.image)?;
        let layers = self.image_layers(&rec).await?;
        let defaults = hangar_image::ImageDefaults::of(&self.store, &rec)?;
        let mut env = defaults.env;
        for kv in &spec.env {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(EngineError::BadVariable(kv.clone()));
            };
            hangar_image::set_var(&mut env, k, v);
        }
        let cwd = spec
            .workdir
            .clone()
            .or(defaults.working_dir)
            .unwrap_or_else(|| "/".into());
        let mut sb = SandboxSpec::new(layers.iter().map(|(_, p)| p.clone()).collect());
        sb.resources = Resources {
            memory_bytes: spec.memory_bytes,
            pids: spec.pids,
            cpus: spec.cpus,
            // The admin's own command, watched by the admin; its upper goes with it.
            disk_bytes: None,
        };
        sb.runtime = spec.runtime.unwrap_or_default();
        let stack = sb.lowers.clone();
        let sandbox = Sandbox::create(&self.sandboxes.host, sb).await?;
        if let Err(e) = self.layers.lease_stack(sandbox.dir(), &stack) {
            let _ = sandbox.destroy().await;
            return Err(e);
        }
        let exec = ExecSpec {
            argv: spec.argv.clone(),
            env,
            cwd,
            stdin: if spec.stdin {
                Stdio::Piped
            } else {
                Stdio::Null
            },
            stdout: Stdio::Piped,
            stderr: Stdio::Piped,
            ..ExecSpec::default()
        };
        match sandbox.exec(exec).await {
            Ok(process) => Ok(Started::Running(Box::new(Running { process, sandbox }))),
            Err(hangar_sandbox::SandboxError::Spawn {
                source, program, ..
            }) => {
                let _ = sandbox.destroy().await;
                let code = if source.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                Ok(Started::NotExecuted {
                    code,
                    message: format!("failed to run `{program}`: {source}"),
                })
            }
            Err(e) => {
                let _ = sandbox.destroy().await;
                Err(e.into())
            }
        }
    }
}
