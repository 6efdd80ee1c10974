//! `hangar secret set|ls|rm`: values come from stdin or a file, never from the command
//! line (where `ps` and shell history would see them), and are never printed.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use hangar_api::client::{segment, Client};
use hangar_api::wire::SecretList;
use hangar_secrets::Secret;

use crate::print_json;

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

fn secrets_path(env: &str) -> String {
    format!("{}/secrets", crate::tasks::env_path(env))
}

/// A secret's value from `from_file`, else from stdin (prompting on a terminal), checked
/// here too so that a bad value is refused before it travels.
pub(crate) fn read_value(from_file: Option<&std::path::Path>, name: &str) -> Result<Secret> {
    let bytes = match from_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("failed to read the secret from {}", path.display()))?,
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
    Ok(Secret::new(bytes)?)
}

pub async fn secret(client: &Client, cmd: SecretCommand) -> Result<()> {
    match cmd {
        SecretCommand::Set {
            environment,
            name,
            from_file,
        } => {
            let value = read_value(from_file.as_deref(), &name)?;
            let path = format!("{}/{}", secrets_path(&environment), segment(&name));
            client.put_secret(&path, value).await?;
            eprintln!("set secret {name} of {environment}");
        }
        SecretCommand::Ls { environment, json } => {
            let list: SecretList = client.get(&secrets_path(&environment)).await?;
            if json {
                return print_json(&list);
            }
            println!("{:<24} {:<28} {:<5} PROJECTED TO", "NAME", "PHASES", "SET");
            for s in list.secrets {
                println!(
                    "{:<24} {:<28} {:<5} {}",
                    s.name,
                    s.phases
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    if s.set { "yes" } else { "no" },
                    s.projected_to.join(",")
                );
            }
        }
        SecretCommand::Rm { environment, name } => {
            let path = format!("{}/{}", secrets_path(&environment), segment(&name));
            client.delete(&path).await?;
            eprintln!("removed secret {name} of {environment}");
        }
    }
    Ok(())
}
