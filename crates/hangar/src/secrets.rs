//! `hangar secret set|ls|rm`: values come from stdin or a file, never from the command
//! line (where `ps` and shell history would see them), and are never printed.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use hangar_engine::Engine;
use hangar_secrets::Secret;
use serde_json::json;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set a declared secret's value, read from stdin (or --from-file).
    Set {
        environment: String,
        name: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List an environment's secrets: names, phases, whether set. Never values.
    Ls {
        environment: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret's value.
    Rm { environment: String, name: String },
}

pub async fn secret(engine: &Engine, cmd: SecretCommand) -> Result<()> {
    match cmd {
        SecretCommand::Set {
            environment,
            name,
            from_file,
        } => {
            let bytes = match &from_file {
                Some(path) => std::fs::read(path).with_context(|| {
                    format!("failed to read the secret from {}", path.display())
                })?,
                None => {
                    use std::io::IsTerminal;
                    if std::io::stdin().is_terminal() {
                        eprintln!("type the value of {name}, then Ctrl-D:");
                    }
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("failed to read the secret from stdin")?;
                    buf
                }
            };
            let value = Secret::new(bytes)?;
            engine.secret_set(&environment, &name, &value).await?;
            eprintln!("set secret {name} of {environment}");
        }
        SecretCommand::Ls { environment, json } => {
            let list = engine.secret_ls(&environment).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "secrets": list }))?
                );
                return Ok(());
            }
            println!("{:<24} {:<28} {:<5} PROJECTED TO", "NAME", "PHASES", "SET");
            for s in list {
                println!(
                    "{:<24} {:<28} {:<5} {}",
                    s.name,
                    s.phases.join(","),
                    if s.set { "yes" } else { "no" },
                    s.projected_to.join(",")
                );
            }
        }
        SecretCommand::Rm { environment, name } => {
            engine.secret_rm(&environment, &name).await?;
            eprintln!("removed secret {name} of {environment}");
        }
    }
    Ok(())
}
