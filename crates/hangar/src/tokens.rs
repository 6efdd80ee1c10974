//! `hangar token create|ls|rm`: API tokens, each granting one workspace. Only the local
//! admin (the Unix socket, without a token) manages them.

use anyhow::Result;
use clap::Subcommand;
use hangar_api::client::{segment, Client};
use hangar_api::wire::{CreateToken, NewToken, TokenList};
use hangar_secrets::Secret;

use crate::print_json;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token for a workspace; it is printed this once.
    Create {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        json: bool,
    },
    /// List tokens: ids, workspaces, creation times (never the tokens).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a token; requests with it are refused from then on.
    Rm { id: String },
}

/// `--token`/`HANGAR_TOKEN`: a [`Secret`] from the moment it is read.
pub fn parse_token(s: &str) -> Result<Secret, String> {
    Secret::new(s.as_bytes().to_vec())
        .map_err(|_| "is not a token that `hangar token create` printed".to_string())
}

pub async fn token(client: &Client, cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create { workspace, json } => {
            let t: NewToken = client
                .post("/v1/tokens", &CreateToken { workspace })
                .await?;
            if json {
                print_json(&t)?;
            } else {
                eprintln!(
                    "created token {} for workspace {} (it is not shown again)",
                    t.id, t.workspace
                );
                println!("{}", t.token.expose_str());
            }
        }
        TokenCommand::Ls { json } => {
            let list: TokenList = client.get("/v1/tokens").await?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<10} {:<24} CREATED", "ID", "WORKSPACE");
                for t in list.tokens {
                    println!("{:<10} {:<24} {}", t.id, t.workspace, t.created_at);
                }
            }
        }
        TokenCommand::Rm { id } => {
            client
                .delete(&format!("/v1/tokens/{}", segment(&id)))
                .await?;
            eprintln!("removed token {id}");
        }
    }
    Ok(())
}
