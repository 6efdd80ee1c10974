//! `hangar pr` and `hangar forge connect`: an attempt's diff as a pull request, and an
//! environment's forge named.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hangar_api::client::{query, segment, Client};
use hangar_api::wire::{ForgeConnected, OpenPull, PullOpened};

use crate::print_json;

#[derive(Args)]
pub struct PrArgs {
    /// A task id, or a unique prefix of one.
    task: String,
    /// Which attempt (default: the best ready one).
    #[arg(long, conflicts_with = "best")]
    attempt: Option<u32>,
    /// The best attempt: ready, its check passed, the smallest diff (the default).
    #[arg(long)]
    best: bool,
    /// The branch to push (default: hangar/<task>-<attempt>).
    #[arg(long)]
    branch: Option<String>,
    /// The branch it goes into (default: the task's branch, else the default branch).
    #[arg(long)]
    base: Option<String>,
    /// Open it as a draft.
    #[arg(long)]
    draft: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ForgeCommand {
    /// Name the environment's forge: [forge] with a token secret (set its value with
    /// `hangar secret set ENV NAME`) and the webhook secret read from a file.
    Connect {
        /// The forge: only `github` (GitHub or GitHub Enterprise Server).
        kind: ForgeKindArg,
        #[arg(long = "env")]
        environment: String,
        /// The file holding the webhook's secret, as configured on GitHub.
        #[arg(long)]
        webhook_secret_file: PathBuf,
        /// The secret that holds the token that pushes and opens pull requests.
        #[arg(long, default_value = "GITHUB_TOKEN")]
        token_secret: String,
        /// `owner/name` (default: read from the repository's https URL).
        #[arg(long)]
        repository: Option<String>,
        /// The API's base URL, for GitHub Enterprise Server (`https://HOST/api/v3`).
        #[arg(long)]
        api: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ForgeKindArg {
    Github,
}

pub async fn pr(client: &Client, args: PrArgs) -> Result<()> {
    let body = OpenPull {
        attempt: args.attempt,
        branch: args.branch,
        base: args.base,
        draft: args.draft,
    };
    let path = format!("/v1/tasks/{}/pull", segment(&args.task));
    let got: PullOpened = client.post(&path, &body).await?;
    if args.json {
        return print_json(&got);
    }
    let p = &got.pull;
    let pushed = if got.new { "pushed" } else { "already pushed" };
    eprintln!(
        "{pushed} branch {} ({}) of task {} attempt {}, for {}",
        p.branch,
        &p.commit[..p.commit.len().min(12)],
        got.task,
        p.attempt,
        p.base
    );
    match (&p.url, got.forge) {
        (Some(url), _) => {
            if !got.new {
                eprintln!("the pull request was already open");
            }
            println!("{url}");
        }
        (None, false) => eprintln!(
            "no pull request was opened: the environment names no forge (see `hangar forge \
             connect`)"
        ),
        (None, true) => eprintln!("no pull request is open for it yet"),
    }
    Ok(())
}

pub async fn forge(client: &Client, cmd: ForgeCommand) -> Result<()> {
    match cmd {
        ForgeCommand::Connect {
            kind: ForgeKindArg::Github,
            environment,
            webhook_secret_file,
            token_secret,
            repository,
            api,
            json,
        } => {
            let value =
                crate::secrets::read_value(Some(&webhook_secret_file), "the webhook secret")
                    .with_context(|| {
                        format!(
                            "failed to read the webhook secret from {}",
                            webhook_secret_file.display()
                        )
                    })?;
            let path = format!(
                "{}/forge{}",
                crate::tasks::env_path(&environment),
                query(&[
                    ("token_secret", Some(token_secret)),
                    ("repository", repository),
                    ("api", api),
                ])
            );
            let got: ForgeConnected = client.put_secret_json(&path, value).await?;
            if json {
                return print_json(&got);
            }
            println!(
                "environment {} opens pull requests on {} ({}) and hears its webhooks at \
                 /v1/forge/github/webhook",
                got.environment, got.repository, got.api
            );
            if !got.token_set {
                eprintln!(
                    "set the token with `hangar secret set {} {}`",
                    got.environment, got.token_secret
                );
            }
        }
    }
    Ok(())
}
